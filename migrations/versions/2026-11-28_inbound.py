"""Inbound: posts, attachments, provider tokens, rate counters and delivery dedupe keys.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28 19:07:34.715141

"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0002'
down_revision: str | None = '0001'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('provider_tokens',
    sa.Column('provider', sa.String(length=32), nullable=False),
    sa.Column('token', sa.String(length=256), nullable=False),
    sa.Column('delivery_id', sa.Uuid(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('provider', 'token', name=op.f('pk_provider_tokens'))
    )
    with op.batch_alter_table('provider_tokens', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_provider_tokens_created_at'), ['created_at'], unique=False)

    op.create_table('posts',
    sa.Column('platform_id', sa.String(length=64), nullable=False),
    sa.Column('group_id', sa.Uuid(), nullable=False),
    sa.Column('integration_id', sa.Uuid(), nullable=False),
    sa.Column('dedupe_key', sa.String(length=128), nullable=False),
    sa.Column('source', sa.String(length=16), nullable=False),
    sa.Column('author_email', sa.String(length=320), nullable=True),
    sa.Column('author_name', sa.String(length=400), nullable=True),
    sa.Column('author_verified', sa.Boolean(), nullable=False),
    sa.Column('subject', sa.Text(), nullable=False),
    sa.Column('text', sa.Text(), nullable=True),
    sa.Column('html', sa.Text(), nullable=True),
    sa.Column('omitted_attachments', sa.JSON(), nullable=False),
    sa.Column('received_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['group_id'], ['groups.id'], name=op.f('fk_posts_group_id_groups'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['integration_id'], ['integrations.id'], name=op.f('fk_posts_integration_id_integrations')),
    sa.ForeignKeyConstraint(['platform_id'], ['platforms.id'], name=op.f('fk_posts_platform_id_platforms'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_posts')),
    sa.UniqueConstraint('integration_id', 'dedupe_key', name=op.f('uq_posts_integration_id_dedupe_key'))
    )
    with op.batch_alter_table('posts', schema=None) as batch_op:
        batch_op.create_index('ix_posts_group_created', ['group_id', 'created_at', 'id'], unique=False)

    op.create_table('rate_counters',
    sa.Column('integration_id', sa.Uuid(), nullable=False),
    sa.Column('window_seconds', sa.Integer(), nullable=False),
    sa.Column('window_start', sa.BigInteger(), nullable=False),
    sa.Column('count', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['integration_id'], ['integrations.id'], name=op.f('fk_rate_counters_integration_id_integrations'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('integration_id', 'window_seconds', 'window_start', name=op.f('pk_rate_counters'))
    )
    op.create_table('attachments',
    sa.Column('post_id', sa.Uuid(), nullable=False),
    sa.Column('platform_id', sa.String(length=64), nullable=False),
    sa.Column('position', sa.Integer(), nullable=False),
    sa.Column('filename', sa.String(length=400), nullable=False),
    sa.Column('content_type', sa.String(length=200), nullable=False),
    sa.Column('size', sa.BigInteger(), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('inline', sa.Boolean(), nullable=False),
    sa.Column('content_id', sa.String(length=400), nullable=True),
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.ForeignKeyConstraint(['platform_id'], ['platforms.id'], name=op.f('fk_attachments_platform_id_platforms'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['post_id'], ['posts.id'], name=op.f('fk_attachments_post_id_posts'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_attachments'))
    )
    with op.batch_alter_table('attachments', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_attachments_post_id'), ['post_id'], unique=False)
        batch_op.create_index('ix_attachments_sha256', ['sha256'], unique=False)

    with op.batch_alter_table('deliveries', schema=None) as batch_op:
        batch_op.add_column(sa.Column('dedupe_key', sa.String(length=128), nullable=True))
        batch_op.add_column(sa.Column('content_sha256', sa.String(length=64), nullable=True))
        batch_op.create_index('ix_deliveries_dedupe', ['dedupe_key'], unique=False)
        batch_op.create_index('ix_deliveries_unrouted_received', ['received_at', 'id'], unique=False, postgresql_where=sa.text('platform_id IS NULL'), sqlite_where=sa.text('platform_id IS NULL'))



def downgrade() -> None:
    with op.batch_alter_table('deliveries', schema=None) as batch_op:
        batch_op.drop_index('ix_deliveries_unrouted_received', postgresql_where=sa.text('platform_id IS NULL'), sqlite_where=sa.text('platform_id IS NULL'))
        batch_op.drop_index('ix_deliveries_dedupe')
        batch_op.drop_column('content_sha256')
        batch_op.drop_column('dedupe_key')

    with op.batch_alter_table('attachments', schema=None) as batch_op:
        batch_op.drop_index('ix_attachments_sha256')
        batch_op.drop_index(batch_op.f('ix_attachments_post_id'))

    op.drop_table('attachments')
    op.drop_table('rate_counters')
    with op.batch_alter_table('posts', schema=None) as batch_op:
        batch_op.drop_index('ix_posts_group_created')

    op.drop_table('posts')
    with op.batch_alter_table('provider_tokens', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_provider_tokens_created_at'))

    op.drop_table('provider_tokens')
