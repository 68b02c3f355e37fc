"""error events counted per hour (error_hourly), filled from the events already there

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01 20:10:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('error_hourly',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('hour', sa.DateTime(timezone=True), nullable=False),
    sa.Column('fingerprint', sa.String(length=32), nullable=False),
    sa.Column('category', sa.String(length=32), nullable=False),
    sa.Column('code', sa.String(length=64), nullable=False),
    sa.Column('severity', sa.String(length=16), nullable=False),
    sa.Column('crew_key', sa.String(length=36), nullable=False),
    sa.Column('count', sa.Integer(), nullable=False),
    sa.Column('executions', sa.Integer(), nullable=False),
    sa.Column('first_seen', sa.DateTime(timezone=True), nullable=False),
    sa.Column('last_seen', sa.DateTime(timezone=True), nullable=False),
    sa.Column('sample_message', sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('hour', 'fingerprint', 'category', 'code', 'severity', 'crew_key', name='uq_error_hourly')
    )
    with op.batch_alter_table('error_hourly', schema=None) as batch_op:
        batch_op.create_index('ix_error_hourly_hour', ['hour'], unique=False)
    # The events recorded before this table existed.
    if op.get_bind().dialect.name == 'postgresql':
        hour = "date_trunc('hour', occurred_at)"
    else:
        hour = "strftime('%Y-%m-%d %H:00:00.000000', occurred_at)"
    op.execute(
        "INSERT INTO error_hourly (hour, fingerprint, category, code, severity, crew_key, count, executions,"
        " first_seen, last_seen, sample_message)"
        f" SELECT {hour}, fingerprint, category, code, severity, COALESCE(crew_id, ''), count(*),"
        " count(DISTINCT execution_id), min(occurred_at), max(occurred_at), min(message)"
        f" FROM error_events GROUP BY {hour}, fingerprint, category, code, severity, COALESCE(crew_id, '')"
    )


def downgrade() -> None:
    with op.batch_alter_table('error_hourly', schema=None) as batch_op:
        batch_op.drop_index('ix_error_hourly_hour')
    op.drop_table('error_hourly')
