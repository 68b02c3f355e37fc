"""the call journal (every LLM and tool call of a task attempt) and the cost totals of tasks

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03 16:00:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('call_journal',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('execution_id', sa.String(length=36), nullable=False),
    sa.Column('task', sa.String(length=200), nullable=False),
    sa.Column('revision', sa.Integer(), nullable=False),
    sa.Column('attempt', sa.Integer(), nullable=False),
    sa.Column('seq', sa.Integer(), nullable=False),
    sa.Column('kind', sa.String(length=8), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('service', sa.String(length=200), nullable=False),
    sa.Column('fingerprint', sa.String(length=64), nullable=False),
    sa.Column('outcome', sa.String(length=16), nullable=False),
    sa.Column('error_code', sa.String(length=64), nullable=True),
    sa.Column('response', sa.Text(), nullable=True),
    sa.Column('response_hash', sa.String(length=64), nullable=True),
    sa.Column('response_bytes', sa.Integer(), nullable=False),
    sa.Column('replayable', sa.Boolean(), nullable=False),
    sa.Column('source_id', sa.Integer(), nullable=True),
    sa.Column('source_attempt', sa.Integer(), nullable=True),
    sa.Column('reused', sa.Boolean(), nullable=False),
    sa.Column('tokens_in', sa.Integer(), nullable=False),
    sa.Column('tokens_out', sa.Integer(), nullable=False),
    sa.Column('cost_usd', sa.Float(), nullable=True),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('duration_ms', sa.Float(), nullable=False),
    sa.ForeignKeyConstraint(['execution_id'], ['executions.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('execution_id', 'task', 'revision', 'attempt', 'seq', name='uq_call_journal_call')
    )
    with op.batch_alter_table('task_runs') as batch:
        batch.add_column(sa.Column('tokens_in', sa.Integer(), nullable=False, server_default='0'))
        batch.add_column(sa.Column('tokens_out', sa.Integer(), nullable=False, server_default='0'))
        batch.add_column(sa.Column('cost_usd', sa.Float(), nullable=False, server_default='0'))
        batch.add_column(sa.Column('wasted_cost_usd', sa.Float(), nullable=False, server_default='0'))


def downgrade() -> None:
    with op.batch_alter_table('task_runs') as batch:
        batch.drop_column('wasted_cost_usd')
        batch.drop_column('cost_usd')
        batch.drop_column('tokens_out')
        batch.drop_column('tokens_in')
    op.drop_table('call_journal')
