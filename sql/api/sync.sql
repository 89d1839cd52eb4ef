-- Synced application tables: an application's INSERT, UPDATE and DELETE statements queue
-- the ids of the rows they change (hybridsearch.sync_enqueue, in the application's own
-- transaction), and `hybridsearch sync run` reads each queued row as it is then and
-- writes or deletes its document (hybridsearch/sync/). The tables are created by
-- revision 0003: synced_tables, sync_queue, sync_failures.
--
-- The current source of these functions (see sql/README.md): edit here, and ship the
-- change in a new alembic revision.

-- The trigger function of every synced table. INSERT and DELETE fire it once per
-- statement with the statement's transition table (new_rows, old_rows), and it queues
-- one entry holding the ids (and tenants) of all the statement's rows: a 100,000-row
-- INSERT adds one queue row. A statement of a few rows reads them through to_jsonb (a
-- plan cached per session); a larger one through a statement built for the table's
-- columns (planned once per statement, and about 5x cheaper per row than to_jsonb of a
-- whole row). UPDATE fires it per row, and only for rows whose synced columns changed:
-- the trigger's own WHEN clause tests that without calling the function (transition
-- tables would rule out both the column list and WHEN), so an UPDATE of other columns
-- costs nothing. An UPDATE that moves a row to another id or tenant also queues the old
-- id and tenant, whose document is then deleted. TG_ARGV: sync_id, id column, tenant
-- column ('' for none); written by hybridsearch.sync_table.
--
-- SECURITY DEFINER, the one exception to the schema's SECURITY INVOKER: an
-- application's role must be able to write its own table without any right on schema
-- hybridsearch, so the queue insert runs as the function's owner (the schema's owner).
-- It does nothing else: it reads only the rows of the statement that fired it, cannot
-- be called except as a trigger, and pins search_path. It must never fail the
-- application's write: the queue has no constraint but NOT NULL (rows without an id are
-- skipped), and the id and tenant columns' types are ones whose JSON text equals their
-- text (hybridsearch.sync_id_types), so nothing here raises on a value.
CREATE OR REPLACE FUNCTION hybridsearch.sync_enqueue()
RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_sync_id integer := TG_ARGV[0]::integer;
    v_id      text := TG_ARGV[1];
    v_tenant  text := nullif(TG_ARGV[2], '');
    v_new     jsonb;
    v_old     jsonb;
    v_rows    bigint;
    v_queued  bigint;
BEGIN
    IF TG_OP = 'UPDATE' THEN
        v_new := to_jsonb(NEW);
        v_old := to_jsonb(OLD);
        INSERT INTO hybridsearch.sync_queue (sync_id, row_ids, tenant_ids, operation)
        SELECT v_sync_id, array_agg(r.j ->> v_id), array_agg(coalesce(r.j ->> v_tenant, '')),
               'U'
        FROM (VALUES (v_new, true), (v_old, false)) AS r(j, is_new)
        WHERE r.j ->> v_id IS NOT NULL
          AND (r.is_new OR (v_old -> v_id) IS DISTINCT FROM (v_new -> v_id)
               OR (v_old -> v_tenant) IS DISTINCT FROM (v_new -> v_tenant))
        HAVING count(*) > 0;
    ELSE
        IF TG_OP = 'INSERT' THEN
            SELECT count(*) INTO v_rows FROM new_rows;
        ELSE
            SELECT count(*) INTO v_rows FROM old_rows;
        END IF;
        IF v_rows <= 8 AND TG_OP = 'INSERT' THEN
            INSERT INTO hybridsearch.sync_queue (sync_id, row_ids, tenant_ids, operation)
            SELECT v_sync_id, array_agg(r.j ->> v_id),
                   array_agg(coalesce(r.j ->> v_tenant, '')), 'I'
            FROM (SELECT to_jsonb(n.*) AS j FROM new_rows AS n) AS r
            WHERE r.j ->> v_id IS NOT NULL
            HAVING count(*) > 0;
        ELSIF v_rows <= 8 THEN
            INSERT INTO hybridsearch.sync_queue (sync_id, row_ids, tenant_ids, operation)
            SELECT v_sync_id, array_agg(r.j ->> v_id),
                   array_agg(coalesce(r.j ->> v_tenant, '')), 'D'
            FROM (SELECT to_jsonb(o.*) AS j FROM old_rows AS o) AS r
            WHERE r.j ->> v_id IS NOT NULL
            HAVING count(*) > 0;
        ELSE
            EXECUTE format(
                'INSERT INTO hybridsearch.sync_queue (sync_id, row_ids, tenant_ids, operation)'
                ' SELECT $1, array_agg(r.%1$I::text), array_agg(%2$s), $2 FROM %3$I AS r'
                ' WHERE r.%1$I IS NOT NULL HAVING count(*) > 0',
                v_id,
                CASE WHEN v_tenant IS NULL THEN '''''::text'
                     ELSE format('coalesce(r.%I::text, '''')', v_tenant) END,
                CASE TG_OP WHEN 'INSERT' THEN 'new_rows' ELSE 'old_rows' END)
            USING v_sync_id, left(TG_OP, 1)::"char";
        END IF;
    END IF;
    GET DIAGNOSTICS v_queued = ROW_COUNT;
    IF v_queued > 0 THEN
        -- Repeats within a transaction fold into one notification.
        PERFORM pg_notify('hybridsearch_sync', '');
    END IF;
    RETURN NULL;
END;
$$;

-- The id (and tenant) column types a synced table may have: their JSON text (what the
-- trigger reads through to_jsonb) is their text, so the queue and the worker name a row
-- alike.
CREATE OR REPLACE FUNCTION hybridsearch.sync_id_types()
RETURNS regtype[]
LANGUAGE sql IMMUTABLE SECURITY INVOKER
AS $$
    SELECT ARRAY['smallint', 'integer', 'bigint', 'text', 'character varying', 'uuid']::regtype[];
$$;

-- A column of a table by name: its type, or an invalid_parameter_value error naming
-- the table and saying what is wrong.
CREATE OR REPLACE FUNCTION hybridsearch.sync_column_type(
    p_table regclass, p_column text, p_role text
)
RETURNS regtype
LANGUAGE plpgsql STABLE SECURITY INVOKER
AS $$
DECLARE
    v_type regtype;
BEGIN
    SELECT a.atttypid::regtype INTO v_type
    FROM pg_catalog.pg_attribute AS a
    WHERE a.attrelid = p_table AND a.attname = p_column AND a.attnum > 0
      AND NOT a.attisdropped;
    IF NOT FOUND THEN
        RAISE EXCEPTION USING
            ERRCODE = 'invalid_parameter_value',
            MESSAGE = format('table %s has no column %L (given as the %s column)',
                             p_table, p_column, p_role),
            HINT = 'Name existing columns of the table, exactly as they are spelled.';
    END IF;
    RETURN v_type;
END;
$$;

-- The trigger names of one synced table (one per event: transition tables need that).
CREATE OR REPLACE FUNCTION hybridsearch.sync_trigger_names(p_sync_id integer)
RETURNS TABLE (event text, trigger_name text)
LANGUAGE sql IMMUTABLE SECURITY INVOKER
AS $$
    SELECT e.event, format('hybridsearch_sync_%s_%s', p_sync_id, lower(e.event))
    FROM unnest(ARRAY['INSERT', 'UPDATE', 'DELETE']) AS e(event);
$$;

-- Keep a collection in step with an application's table: install the triggers that
-- queue each changed row, and start the backfill of the rows already there (queued by
-- hybridsearch.sync_backfill, in batches, by the worker or the caller). Declaring the
-- same table and collection again recreates its triggers; with other columns, it also
-- queues every row again.
-- The table and its rows are never altered; CREATE TRIGGER locks writes to it until
-- this transaction ends, so call it in a short transaction of its own.
CREATE OR REPLACE FUNCTION hybridsearch.sync_table(
    p_collection text,
    p_table regclass,
    p_id_column text,
    p_text_columns text[],
    p_metadata_columns text[] DEFAULT '{}',
    p_tenant_column text DEFAULT NULL
)
RETURNS integer
LANGUAGE plpgsql VOLATILE SECURITY INVOKER
AS $$
DECLARE
    v_collection hybridsearch.collections := hybridsearch.get_collection(p_collection);
    v_schema     text;
    v_name       text;
    v_kind       "char";
    v_columns    text[];
    v_synced     text[];
    v_list       text;
    v_column     text;
    v_sync_id    integer;
    v_same       boolean;
    v_trigger    record;
BEGIN
    SELECT n.nspname, c.relname, c.relkind INTO v_schema, v_name, v_kind
    FROM pg_catalog.pg_class AS c
    JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace
    WHERE c.oid = p_table;
    IF v_kind NOT IN ('r', 'p') THEN
        RAISE EXCEPTION USING
            ERRCODE = 'invalid_parameter_value',
            MESSAGE = format('%s is not a table', p_table),
            HINT = 'Sync a table; views and foreign tables have no row triggers to queue from.';
    END IF;
    IF v_schema = 'hybridsearch' THEN
        RAISE EXCEPTION USING
            ERRCODE = 'invalid_parameter_value',
            MESSAGE = format('%s belongs to hybridsearch itself', p_table),
            HINT = 'Sync an application''s table.';
    END IF;
    IF p_text_columns IS NULL OR cardinality(p_text_columns) = 0 THEN
        RAISE EXCEPTION USING
            ERRCODE = 'invalid_parameter_value',
            MESSAGE = 'no text columns given',
            HINT = 'Name the columns whose text the documents hold, e.g. ARRAY[''title'', ''body''].';
    END IF;
    IF NOT hybridsearch.sync_column_type(p_table, p_id_column, 'id')
           = ANY (hybridsearch.sync_id_types()) THEN
        RAISE EXCEPTION USING
            ERRCODE = 'invalid_parameter_value',
            MESSAGE = format('the id column %I of %s is of type %s', p_id_column, p_table,
                             hybridsearch.sync_column_type(p_table, p_id_column, 'id')),
            HINT = 'The id column must be smallint, integer, bigint, text, varchar or uuid.';
    END IF;
    IF NOT EXISTS (
        SELECT FROM pg_catalog.pg_index AS i
        JOIN pg_catalog.pg_attribute AS a
          ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
        WHERE i.indrelid = p_table AND i.indisunique AND i.indnkeyatts = 1
          AND i.indpred IS NULL AND i.indexprs IS NULL AND a.attname = p_id_column
    ) THEN
        RAISE EXCEPTION USING
            ERRCODE = 'invalid_parameter_value',
            MESSAGE = format('the id column %I of %s is not unique', p_id_column, p_table),
            HINT = 'Use the primary key, or a column with a unique index of its own: each '
                   'row becomes the document of that id.';
    END IF;
    v_columns := p_text_columns || coalesce(p_metadata_columns, '{}')
                 || coalesce(ARRAY[p_tenant_column], '{}');
    FOREACH v_column IN ARRAY p_text_columns LOOP
        PERFORM hybridsearch.sync_column_type(p_table, v_column, 'text');
    END LOOP;
    FOREACH v_column IN ARRAY coalesce(p_metadata_columns, '{}') LOOP
        PERFORM hybridsearch.sync_column_type(p_table, v_column, 'metadata');
    END LOOP;
    IF p_tenant_column IS NOT NULL AND NOT hybridsearch.sync_column_type(
           p_table, p_tenant_column, 'tenant') = ANY (hybridsearch.sync_id_types()) THEN
        RAISE EXCEPTION USING
            ERRCODE = 'invalid_parameter_value',
            MESSAGE = format('the tenant column %I of %s is of type %s', p_tenant_column,
                             p_table,
                             hybridsearch.sync_column_type(p_table, p_tenant_column, 'tenant')),
            HINT = 'The tenant column must be text, varchar, smallint, integer, bigint or uuid.';
    END IF;
    -- The columns an UPDATE must change to be queued (the id and tenant included).
    SELECT array_agg(DISTINCT c ORDER BY c) INTO v_synced
    FROM unnest(v_columns || p_id_column) AS c;
    SELECT string_agg(quote_ident(c), ', ') INTO v_list FROM unnest(v_synced) AS c;

    -- Declared again with the same columns: the backfill goes on where it was.
    v_same := EXISTS (
        SELECT FROM hybridsearch.synced_tables AS s
        WHERE s.collection_id = v_collection.collection_id
          AND s.table_schema = v_schema AND s.table_name = v_name
          AND (s.id_column, s.text_columns, s.metadata_columns, s.tenant_column)
              IS NOT DISTINCT FROM (p_id_column, p_text_columns,
                                    coalesce(p_metadata_columns, '{}'), p_tenant_column));
    INSERT INTO hybridsearch.synced_tables AS s
        (collection_id, table_schema, table_name, id_column, text_columns,
         metadata_columns, tenant_column)
    VALUES (v_collection.collection_id, v_schema, v_name, p_id_column, p_text_columns,
            coalesce(p_metadata_columns, '{}'), p_tenant_column)
    ON CONFLICT (collection_id, table_schema, table_name) DO UPDATE
        SET id_column = EXCLUDED.id_column,
            text_columns = EXCLUDED.text_columns,
            metadata_columns = EXCLUDED.metadata_columns,
            tenant_column = EXCLUDED.tenant_column,
            backfill_after = CASE WHEN v_same THEN s.backfill_after END,
            backfill_done = v_same AND s.backfill_done
    RETURNING s.sync_id INTO v_sync_id;

    FOR v_trigger IN SELECT * FROM hybridsearch.sync_trigger_names(v_sync_id) LOOP
        EXECUTE format('DROP TRIGGER IF EXISTS %I ON %s', v_trigger.trigger_name, p_table);
        EXECUTE format(
            'CREATE TRIGGER %I AFTER %s ON %s %s'
            ' EXECUTE FUNCTION hybridsearch.sync_enqueue(%L, %L, %L)',
            v_trigger.trigger_name,
            CASE v_trigger.event WHEN 'UPDATE' THEN 'UPDATE OF ' || v_list
                                 ELSE v_trigger.event END,
            p_table,
            CASE v_trigger.event
                WHEN 'INSERT' THEN 'REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT'
                WHEN 'DELETE' THEN 'REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT'
                -- record_image_eq compares the values' binary images: any type (json
                -- too, which has no equality operator), and NULLs equal each other
                ELSE format('FOR EACH ROW WHEN (NOT pg_catalog.record_image_eq(ROW(%s), ROW(%s)))',
                            (SELECT string_agg('OLD.' || quote_ident(c), ', ')
                             FROM unnest(v_synced) AS c),
                            (SELECT string_agg('NEW.' || quote_ident(c), ', ')
                             FROM unnest(v_synced) AS c))
            END,
            v_sync_id, p_id_column, coalesce(p_tenant_column, ''));
    END LOOP;
    RETURN v_sync_id;
END;
$$;

-- The sync_id of a table synced into a collection; NULL when it is not.
CREATE OR REPLACE FUNCTION hybridsearch.synced_table_id(p_collection text, p_table regclass)
RETURNS integer
LANGUAGE sql STABLE SECURITY INVOKER
AS $$
    SELECT s.sync_id
    FROM hybridsearch.synced_tables AS s
    JOIN hybridsearch.collections AS c ON c.collection_id = s.collection_id
    JOIN pg_catalog.pg_class AS t ON t.oid = p_table
    JOIN pg_catalog.pg_namespace AS n ON n.oid = t.relnamespace
    WHERE c.name = p_collection AND s.table_schema = n.nspname AND s.table_name = t.relname;
$$;

-- Stop syncing a table into a collection: drop its triggers, its queued rows and its
-- failures. The collection keeps its documents. False when the table was not synced.
CREATE OR REPLACE FUNCTION hybridsearch.unsync_table(p_collection text, p_table regclass)
RETURNS boolean
LANGUAGE plpgsql VOLATILE SECURITY INVOKER
AS $$
DECLARE
    v_sync_id integer := hybridsearch.synced_table_id(p_collection, p_table);
    v_trigger record;
BEGIN
    IF v_sync_id IS NULL THEN
        RETURN false;
    END IF;
    FOR v_trigger IN SELECT * FROM hybridsearch.sync_trigger_names(v_sync_id) LOOP
        EXECUTE format('DROP TRIGGER IF EXISTS %I ON %s', v_trigger.trigger_name, p_table);
    END LOOP;
    DELETE FROM hybridsearch.sync_queue AS q WHERE q.sync_id = v_sync_id;
    DELETE FROM hybridsearch.synced_tables AS s WHERE s.sync_id = v_sync_id;
    RETURN true;
END;
$$;

-- Queue the next batch of a synced table's existing rows, by its id in order (a keyset
-- scan: each call reads p_batch_size rows past the last one queued, and takes no lock
-- that blocks the application's writes). Returns how many it queued; 0 once every row
-- is queued, or when the table is gone. Rows changed meanwhile are queued by the
-- triggers, which exist before the first batch is read.
CREATE OR REPLACE FUNCTION hybridsearch.sync_backfill(
    p_sync_id integer, p_batch_size integer DEFAULT 1000
)
RETURNS integer
LANGUAGE plpgsql VOLATILE SECURITY INVOKER
AS $$
DECLARE
    v_synced hybridsearch.synced_tables;
    v_table  regclass;
    v_type   regtype;
    v_count  integer;
    v_last   text;
BEGIN
    IF p_batch_size IS NULL OR p_batch_size < 1 THEN
        RAISE EXCEPTION USING
            ERRCODE = 'invalid_parameter_value',
            MESSAGE = format('backfill batch size must be at least 1, got %s', p_batch_size);
    END IF;
    -- One backfill step at a time per table: the row lock orders concurrent callers.
    SELECT * INTO v_synced FROM hybridsearch.synced_tables AS s
    WHERE s.sync_id = p_sync_id FOR UPDATE;
    IF NOT FOUND OR v_synced.backfill_done THEN
        RETURN 0;
    END IF;
    v_table := to_regclass(format('%I.%I', v_synced.table_schema, v_synced.table_name));
    IF v_table IS NULL THEN
        RETURN 0;  -- the table is gone; hybridsearch.sync_status says so
    END IF;
    v_type := hybridsearch.sync_column_type(v_table, v_synced.id_column, 'id');
    EXECUTE format(
        $sql$
        WITH batch AS (
            SELECT t.%1$I AS id, %2$s AS tenant
            FROM %3$s AS t
            WHERE t.%1$I IS NOT NULL AND ($1 IS NULL OR t.%1$I > $1::%4$s)
            ORDER BY t.%1$I
            LIMIT $2
        ), queued AS (
            INSERT INTO hybridsearch.sync_queue (sync_id, row_ids, tenant_ids, operation)
            SELECT $3, array_agg(b.id::text), array_agg(b.tenant), 'B' FROM batch AS b
            HAVING count(*) > 0
        )
        SELECT count(*)::integer, (SELECT b.id::text FROM batch AS b ORDER BY b.id DESC LIMIT 1)
        FROM batch
        $sql$,
        v_synced.id_column,
        CASE WHEN v_synced.tenant_column IS NULL THEN '''''::text'
             ELSE format('coalesce(t.%I::text, '''')', v_synced.tenant_column) END,
        v_table,
        v_type)
    INTO v_count, v_last
    USING v_synced.backfill_after, p_batch_size, p_sync_id;
    UPDATE hybridsearch.synced_tables AS s
    SET backfill_after = coalesce(v_last, s.backfill_after),
        backfill_done = v_count < p_batch_size
    WHERE s.sync_id = p_sync_id;
    IF v_count > 0 THEN
        PERFORM pg_notify('hybridsearch_sync', '');
    END IF;
    RETURN v_count;
END;
$$;

-- Queue the failed rows again (all, one collection's, or one synced table's) and forget
-- their failures; how many were queued.
CREATE OR REPLACE FUNCTION hybridsearch.sync_retry(
    p_collection text DEFAULT NULL, p_table regclass DEFAULT NULL
)
RETURNS integer
LANGUAGE plpgsql VOLATILE SECURITY INVOKER
AS $$
DECLARE
    v_count integer;
BEGIN
    WITH moved AS (
        DELETE FROM hybridsearch.sync_failures AS f
        USING hybridsearch.synced_tables AS s, hybridsearch.collections AS c
        WHERE s.sync_id = f.sync_id AND c.collection_id = s.collection_id
          AND (p_collection IS NULL OR c.name = p_collection)
          AND (p_table IS NULL OR (s.table_schema, s.table_name) = (
                SELECT n.nspname, t.relname FROM pg_catalog.pg_class AS t
                JOIN pg_catalog.pg_namespace AS n ON n.oid = t.relnamespace
                WHERE t.oid = p_table))
        RETURNING f.sync_id, f.row_id, f.tenant_id
    ), queued AS (
        INSERT INTO hybridsearch.sync_queue (sync_id, row_ids, tenant_ids, operation)
        SELECT m.sync_id, array_agg(m.row_id), array_agg(m.tenant_id), 'R'
        FROM moved AS m GROUP BY m.sync_id
    )
    SELECT count(*) INTO v_count FROM moved;
    IF v_count > 0 THEN
        PERFORM pg_notify('hybridsearch_sync', '');
    END IF;
    RETURN v_count;
END;
$$;

-- Every synced table: its collection and columns, its queue (rows, and the lag: how
-- long the oldest has waited), its failed rows, whether its backfill is done, and what
-- is wrong with it (NULL when nothing): the table or a column gone, triggers missing.
CREATE OR REPLACE FUNCTION hybridsearch.sync_status()
RETURNS TABLE (
    sync_id integer,
    collection text,
    table_name text,
    id_column text,
    text_columns text[],
    metadata_columns text[],
    tenant_column text,
    queued bigint,
    lag interval,
    failed bigint,
    backfill_done boolean,
    problem text
)
LANGUAGE sql STABLE SECURITY INVOKER
AS $$
    SELECT s.sync_id, c.name, format('%I.%I', s.table_schema, s.table_name),
           s.id_column, s.text_columns, s.metadata_columns, s.tenant_column,
           q.queued, pg_catalog.now() - q.oldest, f.failed, s.backfill_done,
           CASE
               WHEN r.oid IS NULL THEN 'the table no longer exists'
               WHEN m.missing IS NOT NULL THEN 'columns no longer in the table: ' || m.missing
               WHEN g.triggers < 3 THEN 'its triggers were dropped; run sync_table again'
           END
    FROM hybridsearch.synced_tables AS s
    JOIN hybridsearch.collections AS c ON c.collection_id = s.collection_id
    LEFT JOIN LATERAL (
        SELECT to_regclass(format('%I.%I', s.table_schema, s.table_name)) AS oid
    ) AS r ON true
    CROSS JOIN LATERAL (
        SELECT coalesce(sum(cardinality(e.row_ids)), 0)::bigint AS queued,
               min(e.enqueued_at) AS oldest
        FROM hybridsearch.sync_queue AS e WHERE e.sync_id = s.sync_id
    ) AS q
    CROSS JOIN LATERAL (
        SELECT count(*) AS failed FROM hybridsearch.sync_failures AS x
        WHERE x.sync_id = s.sync_id
    ) AS f
    CROSS JOIN LATERAL (
        SELECT string_agg(col, ', ') AS missing
        FROM unnest(s.text_columns || s.metadata_columns || s.id_column
                    || coalesce(ARRAY[s.tenant_column], '{}')) AS col
        WHERE r.oid IS NOT NULL AND NOT EXISTS (
            SELECT FROM pg_catalog.pg_attribute AS a
            WHERE a.attrelid = r.oid AND a.attname = col AND a.attnum > 0
              AND NOT a.attisdropped)
    ) AS m
    CROSS JOIN LATERAL (
        SELECT count(*) AS triggers FROM pg_catalog.pg_trigger AS t
        JOIN hybridsearch.sync_trigger_names(s.sync_id) AS n ON n.trigger_name = t.tgname
        WHERE t.tgrelid = r.oid
    ) AS g
    ORDER BY c.name, s.table_schema, s.table_name;
$$;
