"""Foundation: platforms, groups, memberships, integrations and the delivery log.

Revision ID: 0001
Revises: 
Create Date: 2026-11-28 19:01:14.877683

"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0001'
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('platforms',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('plan', sa.Enum('essentials', 'standard', 'premium', name='plan', native_enum=False, length=32), nullable=False),
    sa.Column('members_can_add_integrations', sa.Boolean(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_platforms'))
    )
    op.create_table('groups',
    sa.Column('platform_id', sa.String(length=64), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('description', sa.String(length=2000), nullable=True),
    sa.Column('members_can_add_integrations', sa.Boolean(), nullable=False),
    sa.Column('created_by', sa.String(length=200), nullable=False),
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['platform_id'], ['platforms.id'], name=op.f('fk_groups_platform_id_platforms'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_groups'))
    )
    with op.batch_alter_table('groups', schema=None) as batch_op:
        batch_op.create_index('ix_groups_platform_created', ['platform_id', 'created_at', 'id'], unique=False)

    op.create_table('group_members',
    sa.Column('group_id', sa.Uuid(), nullable=False),
    sa.Column('user_id', sa.String(length=200), nullable=False),
    sa.Column('platform_id', sa.String(length=64), nullable=False),
    sa.Column('role', sa.Enum('manager', 'member', name='grouprole', native_enum=False, length=16), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['group_id'], ['groups.id'], name=op.f('fk_group_members_group_id_groups'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['platform_id'], ['platforms.id'], name=op.f('fk_group_members_platform_id_platforms'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('group_id', 'user_id', name=op.f('pk_group_members'))
    )
    with op.batch_alter_table('group_members', schema=None) as batch_op:
        batch_op.create_index('ix_group_members_user', ['platform_id', 'user_id'], unique=False)

    op.create_table('integrations',
    sa.Column('platform_id', sa.String(length=64), nullable=False),
    sa.Column('group_id', sa.Uuid(), nullable=True),
    sa.Column('service', sa.Enum('email', name='service', native_enum=False, length=32), nullable=False),
    sa.Column('title', sa.String(length=400), nullable=False),
    sa.Column('address', sa.String(length=320), nullable=False),
    sa.Column('enabled', sa.Boolean(), nullable=False),
    sa.Column('allowed_senders', sa.JSON(), nullable=False),
    sa.Column('oversize_attachments', sa.Enum('reject', 'drop', name='oversizepolicy', native_enum=False, length=16), nullable=False),
    sa.Column('created_by', sa.String(length=200), nullable=False),
    sa.Column('deleted_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['group_id'], ['groups.id'], name=op.f('fk_integrations_group_id_groups'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['platform_id'], ['platforms.id'], name=op.f('fk_integrations_platform_id_platforms'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_integrations')),
    sa.UniqueConstraint('address', name=op.f('uq_integrations_address'))
    )
    with op.batch_alter_table('integrations', schema=None) as batch_op:
        batch_op.create_index('ix_integrations_group', ['group_id'], unique=False)
        batch_op.create_index('ix_integrations_live_platform', ['platform_id', 'created_at', 'id'], unique=False, postgresql_where=sa.text('deleted_at IS NULL'), sqlite_where=sa.text('deleted_at IS NULL'))

    op.create_table('deliveries',
    sa.Column('platform_id', sa.String(length=64), nullable=True),
    sa.Column('integration_id', sa.Uuid(), nullable=True),
    sa.Column('provider', sa.String(length=32), nullable=False),
    sa.Column('status', sa.Enum('accepted', 'duplicate', 'rejected', 'rate_limited', 'failed', name='deliverystatus', native_enum=False, length=16), nullable=False),
    sa.Column('reason', sa.String(length=64), nullable=True),
    sa.Column('envelope_from', sa.String(length=998), nullable=True),
    sa.Column('envelope_to', sa.String(length=998), nullable=True),
    sa.Column('from', sa.String(length=998), nullable=True),
    sa.Column('subject', sa.Text(), nullable=True),
    sa.Column('size_bytes', sa.BigInteger(), nullable=False),
    sa.Column('message_id', sa.String(length=998), nullable=True),
    sa.Column('spf', sa.String(length=32), nullable=True),
    sa.Column('dkim', sa.String(length=200), nullable=True),
    sa.Column('post_id', sa.Uuid(), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('received_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.ForeignKeyConstraint(['integration_id'], ['integrations.id'], name=op.f('fk_deliveries_integration_id_integrations')),
    sa.ForeignKeyConstraint(['platform_id'], ['platforms.id'], name=op.f('fk_deliveries_platform_id_platforms'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_deliveries'))
    )
    with op.batch_alter_table('deliveries', schema=None) as batch_op:
        batch_op.create_index('ix_deliveries_integration_received', ['integration_id', 'received_at', 'id'], unique=False)
        batch_op.create_index('ix_deliveries_integration_status', ['integration_id', 'status'], unique=False)
        batch_op.create_index('ix_deliveries_platform_received', ['platform_id', 'received_at', 'id'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('deliveries', schema=None) as batch_op:
        batch_op.drop_index('ix_deliveries_platform_received')
        batch_op.drop_index('ix_deliveries_integration_status')
        batch_op.drop_index('ix_deliveries_integration_received')

    op.drop_table('deliveries')
    with op.batch_alter_table('integrations', schema=None) as batch_op:
        batch_op.drop_index('ix_integrations_live_platform', postgresql_where=sa.text('deleted_at IS NULL'), sqlite_where=sa.text('deleted_at IS NULL'))
        batch_op.drop_index('ix_integrations_group')

    op.drop_table('integrations')
    with op.batch_alter_table('group_members', schema=None) as batch_op:
        batch_op.drop_index('ix_group_members_user')

    op.drop_table('group_members')
    with op.batch_alter_table('groups', schema=None) as batch_op:
        batch_op.drop_index('ix_groups_platform_created')

    op.drop_table('groups')
    op.drop_table('platforms')
