"""Admin features: automatic mail and verified senders options.

Revision ID: 0004
Revises: 0002
Create Date: 2026-12-07 10:40:00.000000

"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0004'
down_revision: str | None = '0002'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('integrations', schema=None) as batch_op:
        batch_op.add_column(sa.Column('automatic_mail', sa.Enum('refuse', 'accept', name='automaticmail', native_enum=False, length=16), server_default='refuse', nullable=False))
        batch_op.add_column(sa.Column('allowed_senders_verified_only', sa.Boolean(), server_default=sa.false(), nullable=False))


def downgrade() -> None:
    with op.batch_alter_table('integrations', schema=None) as batch_op:
        batch_op.drop_column('allowed_senders_verified_only')
        batch_op.drop_column('automatic_mail')
