-- What receiver/database.py runs: the check that the schema is the one this code needs.

-- name: schema_revision
-- The Alembic revision the database is at; the table is missing in a database that was never migrated.
SELECT version_num FROM alembic_version;
