"""Fewer keys and indexes kept up on every mail (docs/decisions.md):

- posts, attachments and deliveries keep their platform id without a foreign key of their own:
  the integration's key (the post's, for an attachment) already ties each row to its platform,
  and the platform's key locked one of a few hot rows for every mail;
- the deliveries' index by integration and status goes: the index by integration and time
  carries the status (PostgreSQL, ``INCLUDE``), which the integrations' stats read.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07 14:00:00.000000

"""
from collections.abc import Sequence

from alembic import op


revision: str = '0005'
down_revision: str | None = '0004'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLES = ('posts', 'attachments', 'deliveries')
BY_TIME = ['integration_id', 'received_at', 'id']


def upgrade() -> None:
    for table in TABLES:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_constraint(op.f(f'fk_{table}_platform_id_platforms'), type_='foreignkey')
    with op.batch_alter_table('deliveries', schema=None) as batch_op:
        batch_op.drop_index('ix_deliveries_integration_status')
        batch_op.drop_index('ix_deliveries_integration_received')
        batch_op.create_index(
            'ix_deliveries_integration_received', BY_TIME, unique=False,
            postgresql_include=['status'],
        )


def downgrade() -> None:
    with op.batch_alter_table('deliveries', schema=None) as batch_op:
        batch_op.drop_index('ix_deliveries_integration_received')
        batch_op.create_index('ix_deliveries_integration_received', BY_TIME, unique=False)
        batch_op.create_index(
            'ix_deliveries_integration_status', ['integration_id', 'status'], unique=False
        )
    for table in TABLES:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.create_foreign_key(
                op.f(f'fk_{table}_platform_id_platforms'), 'platforms', ['platform_id'], ['id'],
                ondelete='CASCADE',
            )
