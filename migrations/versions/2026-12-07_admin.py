"""Admin features: automatic mail and verified senders options, previous addresses, the
record of a platform's removal.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-07 10:40:00.000000

"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0004'
down_revision: str | None = '0003'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('integration_addresses',
    sa.Column('address', sa.String(length=320), nullable=False),
    sa.Column('integration_id', sa.Uuid(), nullable=False),
    sa.Column('platform_id', sa.String(length=64), nullable=False),
    sa.Column('valid_until', sa.DateTime(timezone=True), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['integration_id'], ['integrations.id'], name=op.f('fk_integration_addresses_integration_id_integrations'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['platform_id'], ['platforms.id'], name=op.f('fk_integration_addresses_platform_id_platforms'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('address', name=op.f('pk_integration_addresses'))
    )
    with op.batch_alter_table('integration_addresses', schema=None) as batch_op:
        batch_op.create_index('ix_integration_addresses_integration', ['integration_id'], unique=False)

    with op.batch_alter_table('deliveries', schema=None) as batch_op:
        batch_op.add_column(sa.Column('address', sa.String(length=320), nullable=True))

    op.create_table('platform_deletions',
    sa.Column('platform_id', sa.String(length=64), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('removed', sa.JSON(), nullable=False),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('requested_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('platform_id', name=op.f('pk_platform_deletions'))
    )

    with op.batch_alter_table('integrations', schema=None) as batch_op:
        batch_op.add_column(sa.Column('automatic_mail', sa.Enum('refuse', 'accept', name='automaticmail', native_enum=False, length=16), server_default='refuse', nullable=False))
        batch_op.add_column(sa.Column('allowed_senders_verified_only', sa.Boolean(), server_default=sa.false(), nullable=False))


def downgrade() -> None:
    op.drop_table('platform_deletions')
    with op.batch_alter_table('deliveries', schema=None) as batch_op:
        batch_op.drop_column('address')

    with op.batch_alter_table('integration_addresses', schema=None) as batch_op:
        batch_op.drop_index('ix_integration_addresses_integration')

    op.drop_table('integration_addresses')
    with op.batch_alter_table('integrations', schema=None) as batch_op:
        batch_op.drop_column('allowed_senders_verified_only')
        batch_op.drop_column('automatic_mail')
