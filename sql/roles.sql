-- Least-privilege roles for hybridsearch. Run once per database, as a superuser or a
-- role with CREATEROLE that owns the schema, after `hybridsearch db upgrade`:
--
--     psql "$DATABASE_URL" -v ON_ERROR_STOP=1 -f sql/roles.sql
--
-- It is idempotent. The roles are NOLOGIN groups: grant them to your login roles,
-- e.g. `CREATE ROLE web LOGIN PASSWORD '...' IN ROLE hybridsearch_app;`.
--
--   hybridsearch_owner     owns every object in schema hybridsearch
--   hybridsearch_migrator  runs migrations and creates collections (member of owner)
--   hybridsearch_app       ingests and searches; subject to row-level security, so it
--                          sees only the tenant its transaction names
--   hybridsearch_readonly  searches and reads; also subject to row-level security

DO $$
DECLARE
    v_role text;
BEGIN
    FOREACH v_role IN ARRAY ARRAY['hybridsearch_owner', 'hybridsearch_migrator',
                                  'hybridsearch_app', 'hybridsearch_readonly'] LOOP
        IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = v_role) THEN
            EXECUTE format('CREATE ROLE %I NOLOGIN NOBYPASSRLS', v_role);
        END IF;
    END LOOP;
END;
$$;

GRANT hybridsearch_owner TO hybridsearch_migrator;

-- Hand every existing object of the schema to the owner role.
DO $$
DECLARE
    v_object record;
BEGIN
    EXECUTE 'ALTER SCHEMA hybridsearch OWNER TO hybridsearch_owner';
    FOR v_object IN
        SELECT c.relname, c.relkind FROM pg_catalog.pg_class c
        WHERE c.relnamespace = 'hybridsearch'::regnamespace
          AND c.relkind IN ('r', 'p', 'S', 'v', 'm')
          -- sequences owned by a column (identity, OWNED BY) follow their table
          AND NOT (c.relkind = 'S' AND EXISTS (
                  SELECT FROM pg_catalog.pg_depend d
                  WHERE d.classid = 'pg_catalog.pg_class'::regclass AND d.objid = c.oid
                    AND d.refclassid = 'pg_catalog.pg_class'::regclass
                    AND d.deptype IN ('a', 'i')))
    LOOP
        EXECUTE format('ALTER %s hybridsearch.%I OWNER TO hybridsearch_owner',
                       CASE v_object.relkind WHEN 'S' THEN 'SEQUENCE' WHEN 'v' THEN 'VIEW'
                            WHEN 'm' THEN 'MATERIALIZED VIEW' ELSE 'TABLE' END,
                       v_object.relname);
    END LOOP;
    FOR v_object IN
        SELECT p.oid::regprocedure AS signature FROM pg_catalog.pg_proc p
        WHERE p.pronamespace = 'hybridsearch'::regnamespace
    LOOP
        EXECUTE format('ALTER FUNCTION %s OWNER TO hybridsearch_owner', v_object.signature);
    END LOOP;
    EXECUTE 'ALTER TYPE hybridsearch.keyword_query OWNER TO hybridsearch_owner';
END;
$$;

GRANT USAGE ON SCHEMA hybridsearch TO hybridsearch_app, hybridsearch_readonly;
GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA hybridsearch TO hybridsearch_app, hybridsearch_readonly;

-- The app ingests (documents and chunks, through row-level security) and keeps the
-- BM25 statistics and the embedding cache up to date (the triggers run as the caller).
GRANT SELECT ON hybridsearch.collections TO hybridsearch_app, hybridsearch_readonly;
GRANT SELECT, INSERT, UPDATE, DELETE ON hybridsearch.documents TO hybridsearch_app;
GRANT SELECT, INSERT, DELETE ON hybridsearch.chunks TO hybridsearch_app;
GRANT SELECT, INSERT, UPDATE ON hybridsearch.collection_stats, hybridsearch.term_stats
    TO hybridsearch_app;
GRANT SELECT, INSERT ON hybridsearch.embedding_cache TO hybridsearch_app;
GRANT USAGE ON ALL SEQUENCES IN SCHEMA hybridsearch TO hybridsearch_app;

GRANT SELECT ON hybridsearch.documents, hybridsearch.chunks, hybridsearch.collection_stats,
    hybridsearch.term_stats TO hybridsearch_readonly;

-- Tables of revision 0003, granted where the schema has them (run this file again after
-- upgrading from an older revision).
-- Synced application tables: the app runs the sync worker (it claims and removes queue
-- entries, records and clears failures, advances backfills); the application's own
-- triggers enqueue through hybridsearch.sync_enqueue, which runs as the owner. Both may
-- read the sync status.
-- API keys: the HTTP API checks every request's key and manages keys for admin keys.
-- Only salted hashes are stored, and the read-only role never needs them.
DO $$
BEGIN
    IF to_regclass('hybridsearch.sync_queue') IS NOT NULL THEN
        GRANT SELECT, INSERT, DELETE ON hybridsearch.sync_queue TO hybridsearch_app;
        GRANT SELECT, INSERT, UPDATE, DELETE ON hybridsearch.sync_failures TO hybridsearch_app;
        GRANT SELECT, UPDATE ON hybridsearch.synced_tables TO hybridsearch_app;
        GRANT SELECT ON hybridsearch.sync_queue, hybridsearch.sync_failures,
            hybridsearch.synced_tables TO hybridsearch_readonly;
    END IF;
    IF to_regclass('hybridsearch.api_keys') IS NOT NULL THEN
        GRANT SELECT, INSERT, UPDATE ON hybridsearch.api_keys TO hybridsearch_app;
    END IF;
END;
$$;

-- Both may read which schema revision is installed (readiness checks, client start-up).
GRANT SELECT ON hybridsearch.alembic_version TO hybridsearch_app, hybridsearch_readonly;

-- Row-level security and indexes. On a table with row-level security, PostgreSQL uses an
-- index for a condition only when the condition's function is LEAKPROOF; otherwise it
-- applies the condition after the policy, row by row. The search functions look impact
-- keys up with text[] && (arrayoverlap), match full text with @@ (ts_match_vq) and
-- filter metadata with jsonb @> (jsonb_contains); core PostgreSQL marks none of them
-- leakproof, so under the policy every keyword lookup would read the whole partition.
-- All three only compare their arguments and raise no error that depends on the data,
-- so they are marked LEAKPROOF here. That needs a superuser: where there is none
-- (managed services), keyword search for row-level-security roles stays correct but
-- scans, and giving each large tenant its own collection is the fast alternative.
DO $$
BEGIN
    IF (SELECT r.rolsuper FROM pg_catalog.pg_roles r WHERE r.rolname = current_user) THEN
        ALTER FUNCTION pg_catalog.arrayoverlap(anyarray, anyarray) LEAKPROOF;
        ALTER FUNCTION pg_catalog.ts_match_vq(tsvector, tsquery) LEAKPROOF;
        ALTER FUNCTION pg_catalog.jsonb_contains(jsonb, jsonb) LEAKPROOF;
    ELSE
        RAISE WARNING USING
            MESSAGE = 'not a superuser: keyword search under row-level security will not use its GIN indexes',
            HINT = 'Run sql/roles.sql as a superuser once, or see the comment above this block.';
    END IF;
END;
$$;
