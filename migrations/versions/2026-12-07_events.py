"""Events out: endpoints, events (the pull order: seq, and txid on PostgreSQL), messages, attempts.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-07 10:32:14.675634

"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0003'
down_revision: str | None = '0002'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('event_endpoints',
    sa.Column('url', sa.String(length=2048), nullable=False),
    sa.Column('description', sa.String(length=400), nullable=False),
    sa.Column('event_types', sa.JSON(), nullable=False),
    sa.Column('platform_ids', sa.JSON(), nullable=False),
    sa.Column('enabled', sa.Boolean(), nullable=False),
    sa.Column('secret', sa.String(length=128), nullable=False),
    sa.Column('previous_secret', sa.String(length=128), nullable=True),
    sa.Column('previous_secret_expires_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('failing_since', sa.DateTime(timezone=True), nullable=True),
    sa.Column('disabled_reason', sa.Text(), nullable=True),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_event_endpoints'))
    )
    op.create_table('events',
    sa.Column('seq', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), sa.Identity(always=False), nullable=False),
    sa.Column('id', sa.String(length=40), nullable=False),
    sa.Column('type', sa.Enum('post.created', 'post.deleted', 'delivery.rejected', 'delivery.failed', 'integration.created', 'integration.deleted', 'ping', name='eventtype', native_enum=False, length=32), nullable=False),
    sa.Column('platform_id', sa.String(length=64), nullable=True),
    sa.Column('post_id', sa.Uuid(), nullable=True),
    sa.Column('delivery_id', sa.Uuid(), nullable=True),
    sa.Column('integration_id', sa.Uuid(), nullable=True),
    sa.Column('payload', sa.JSON(none_as_null=True), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('txid', sa.BigInteger(), nullable=True),
    sa.PrimaryKeyConstraint('seq', name=op.f('pk_events')),
    sa.UniqueConstraint('id', name=op.f('uq_events_id')),
    sqlite_autoincrement=True
    )
    with op.batch_alter_table('events', schema=None) as batch_op:
        batch_op.create_index('ix_events_txid_seq', ['txid', 'seq'], unique=False)

    op.create_table('event_messages',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), sa.Identity(always=False), nullable=False),
    sa.Column('event_seq', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('endpoint_id', sa.Uuid(), nullable=False),
    sa.Column('status', sa.Enum('pending', 'delivered', 'failed', name='messagestatus', native_enum=False, length=16), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('next_attempt_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('leased_until', sa.DateTime(timezone=True), nullable=True),
    sa.Column('last_status_code', sa.Integer(), nullable=True),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['endpoint_id'], ['event_endpoints.id'], name=op.f('fk_event_messages_endpoint_id_event_endpoints'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['event_seq'], ['events.seq'], name=op.f('fk_event_messages_event_seq_events'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_event_messages')),
    sa.UniqueConstraint('event_seq', 'endpoint_id', name=op.f('uq_event_messages_event_seq_endpoint_id')),
    sqlite_autoincrement=True
    )
    with op.batch_alter_table('event_messages', schema=None) as batch_op:
        batch_op.create_index('ix_event_messages_due', ['next_attempt_at'], unique=False, postgresql_where=sa.text("status = 'pending'"), sqlite_where=sa.text("status = 'pending'"))
        batch_op.create_index('ix_event_messages_endpoint', ['endpoint_id', 'id'], unique=False)

    op.create_table('event_attempts',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), sa.Identity(always=False), nullable=False),
    sa.Column('message_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('endpoint_id', sa.Uuid(), nullable=False),
    sa.Column('event_id', sa.String(length=40), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('status_code', sa.Integer(), nullable=True),
    sa.Column('duration_ms', sa.Float(), nullable=False),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('next_attempt_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['endpoint_id'], ['event_endpoints.id'], name=op.f('fk_event_attempts_endpoint_id_event_endpoints'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['message_id'], ['event_messages.id'], name=op.f('fk_event_attempts_message_id_event_messages'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_event_attempts')),
    sqlite_autoincrement=True
    )
    with op.batch_alter_table('event_attempts', schema=None) as batch_op:
        batch_op.create_index('ix_event_attempts_endpoint_at', ['endpoint_id', 'at', 'id'], unique=False)
        batch_op.create_index(batch_op.f('ix_event_attempts_message_id'), ['message_id'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('event_attempts', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_event_attempts_message_id'))
        batch_op.drop_index('ix_event_attempts_endpoint_at')

    op.drop_table('event_attempts')
    with op.batch_alter_table('event_messages', schema=None) as batch_op:
        batch_op.drop_index('ix_event_messages_endpoint')
        batch_op.drop_index('ix_event_messages_due', postgresql_where=sa.text("status = 'pending'"), sqlite_where=sa.text("status = 'pending'"))

    op.drop_table('event_messages')
    with op.batch_alter_table('events', schema=None) as batch_op:
        batch_op.drop_index('ix_events_txid_seq')

    op.drop_table('events')
    op.drop_table('event_endpoints')
