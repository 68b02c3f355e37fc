"""Python crews and tools: crew source, registered tools, structured task outputs, human-input
revisions and feedback, the tool of an error event

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03 15:00:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('crews') as batch:
        batch.add_column(sa.Column('source', sa.String(length=16), nullable=False, server_default='spec'))
        batch.add_column(sa.Column('registered_at', sa.DateTime(timezone=True), nullable=True))
    op.create_table('registered_tools',
    sa.Column('name', sa.String(length=100), nullable=False),
    sa.Column('service', sa.String(length=100), nullable=False),
    sa.Column('description', sa.Text(), nullable=False),
    sa.Column('registered_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('name')
    )
    with op.batch_alter_table('task_runs') as batch:
        batch.add_column(sa.Column('output_data', sa.JSON(), nullable=True))
        batch.add_column(sa.Column('revision', sa.Integer(), nullable=False, server_default='0'))
        batch.add_column(sa.Column('feedback', sa.JSON(), nullable=True))
    with op.batch_alter_table('error_events') as batch:
        batch.add_column(sa.Column('tool', sa.String(length=100), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('error_events') as batch:
        batch.drop_column('tool')
    with op.batch_alter_table('task_runs') as batch:
        batch.drop_column('feedback')
        batch.drop_column('revision')
        batch.drop_column('output_data')
    op.drop_table('registered_tools')
    with op.batch_alter_table('crews') as batch:
        batch.drop_column('registered_at')
        batch.drop_column('source')
