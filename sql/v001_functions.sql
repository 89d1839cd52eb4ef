-- hybridsearch SQL API v001.
--
-- These functions are the contract: the Python service calls exactly what a SQL user
-- calls. All are SECURITY INVOKER (the default, stated for the reader) and
-- schema-qualify every name. Dynamic SQL only ever interpolates integers read from
-- hybridsearch.collections and identifiers through format('%I'); user input travels
-- as bound parameters (EXECUTE ... USING).

-- Look up a collection by name; raises no_data_found (P0002) when it does not exist.
CREATE FUNCTION hybridsearch.get_collection(p_name text)
RETURNS hybridsearch.collections
LANGUAGE plpgsql STABLE SECURITY INVOKER
AS $$
DECLARE
    v_collection hybridsearch.collections;
BEGIN
    SELECT * INTO v_collection FROM hybridsearch.collections c WHERE c.name = p_name;
    IF NOT FOUND THEN
        RAISE EXCEPTION USING
            ERRCODE = 'no_data_found',
            MESSAGE = format('collection %L does not exist', p_name),
            HINT = 'Create it with hybridsearch.create_collection().';
    END IF;
    RETURN v_collection;
END;
$$;

-- The pgvector operator class and distance operator for a collection's distance.
CREATE FUNCTION hybridsearch.distance_operator(p_distance text)
RETURNS text
LANGUAGE sql IMMUTABLE SECURITY INVOKER
AS $$
    SELECT CASE p_distance
        WHEN 'cosine' THEN '<=>'
        WHEN 'l2' THEN '<->'
        WHEN 'inner_product' THEN '<#>'
    END;
$$;

-- Full-text representation of a chunk under a collection's analyzer.
CREATE FUNCTION hybridsearch.document_tsvector(p_analyzer text, p_content text)
RETURNS tsvector
LANGUAGE sql STABLE SECURITY INVOKER
AS $$
    SELECT pg_catalog.to_tsvector(p_analyzer::regconfig, p_content);
$$;

-- The keyword query for a user string: every analyzed term, OR-ed together, so long
-- natural-language questions still match documents that share only some terms.
-- Never raises: a string with no searchable terms yields an empty tsquery.
CREATE FUNCTION hybridsearch.keyword_query(p_analyzer text, p_query text)
RETURNS tsquery
LANGUAGE sql STABLE SECURITY INVOKER
AS $$
    -- plainto_tsquery quotes every lexeme safely; its text form joins them with ' & '.
    SELECT pg_catalog.replace(
        pg_catalog.plainto_tsquery(p_analyzer::regconfig, coalesce(p_query, ''))::text,
        ' & ', ' | ')::tsquery;
$$;

-- Create a collection and its chunk partition with an HNSW index and a dimension check.
CREATE FUNCTION hybridsearch.create_collection(
    p_name text,
    p_embedding_model text,
    p_dimensions integer,
    p_distance text DEFAULT 'cosine',
    p_analyzer text DEFAULT 'english',
    p_settings jsonb DEFAULT '{}'
)
RETURNS hybridsearch.collections
LANGUAGE plpgsql VOLATILE SECURITY INVOKER
AS $$
DECLARE
    v_collection hybridsearch.collections;
    v_partition  text;
    v_opclass    text;
BEGIN
    BEGIN
        PERFORM p_analyzer::regconfig;
    EXCEPTION WHEN undefined_object OR invalid_name OR null_value_not_allowed THEN
        RAISE EXCEPTION USING
            ERRCODE = 'invalid_parameter_value',
            MESSAGE = format('unknown analyzer %L', p_analyzer),
            HINT = 'Use a PostgreSQL text search configuration such as english or simple.';
    END;
    INSERT INTO hybridsearch.collections
        (name, embedding_model, dimensions, distance, analyzer, settings)
    VALUES (p_name, p_embedding_model, p_dimensions, p_distance, p_analyzer,
            coalesce(p_settings, '{}'))
    RETURNING * INTO v_collection;

    v_partition := 'chunks_' || v_collection.collection_id;
    v_opclass := CASE p_distance
        WHEN 'cosine' THEN 'vector_cosine_ops'
        WHEN 'l2' THEN 'vector_l2_ops'
        WHEN 'inner_product' THEN 'vector_ip_ops'
    END;
    EXECUTE format(
        'CREATE TABLE hybridsearch.%I PARTITION OF hybridsearch.chunks FOR VALUES IN (%s)',
        v_partition, v_collection.collection_id);
    EXECUTE format(
        'ALTER TABLE hybridsearch.%I ADD CONSTRAINT %I CHECK (vector_dims(embedding) = %s)',
        v_partition, v_partition || '_dimensions', p_dimensions);
    EXECUTE format(
        'CREATE INDEX %I ON hybridsearch.%I USING hnsw ((embedding::vector(%s)) %s)',
        v_partition || '_embedding_idx', v_partition, p_dimensions, v_opclass);
    RETURN v_collection;
END;
$$;

-- Drop a collection with all its documents and chunks; false when it did not exist.
CREATE FUNCTION hybridsearch.drop_collection(p_name text)
RETURNS boolean
LANGUAGE plpgsql VOLATILE SECURITY INVOKER
AS $$
DECLARE
    v_id integer;
BEGIN
    SELECT collection_id INTO v_id FROM hybridsearch.collections WHERE name = p_name FOR UPDATE;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    -- Dropping the partition is far cheaper than cascading row by row.
    EXECUTE format('DROP TABLE IF EXISTS hybridsearch.%I', 'chunks_' || v_id);
    DELETE FROM hybridsearch.collections WHERE collection_id = v_id;
    RETURN true;
END;
$$;

-- Reject a top_k outside 1..1000 (the planner and ef_search both need a bound).
CREATE FUNCTION hybridsearch.check_top_k(p_top_k integer)
RETURNS void
LANGUAGE plpgsql IMMUTABLE SECURITY INVOKER
AS $$
BEGIN
    IF p_top_k IS NULL OR p_top_k < 1 OR p_top_k > 1000 THEN
        RAISE EXCEPTION USING
            ERRCODE = 'invalid_parameter_value',
            MESSAGE = format('top_k must be between 1 and 1000, got %s', coalesce(p_top_k::text, 'NULL'));
    END IF;
END;
$$;

-- Reject a filter that is not a JSON object.
CREATE FUNCTION hybridsearch.check_filter(p_filter jsonb)
RETURNS void
LANGUAGE plpgsql IMMUTABLE SECURITY INVOKER
AS $$
BEGIN
    IF p_filter IS NOT NULL AND jsonb_typeof(p_filter) <> 'object' THEN
        RAISE EXCEPTION USING
            ERRCODE = 'invalid_parameter_value',
            MESSAGE = format('filter must be a JSON object, got %s', jsonb_typeof(p_filter)),
            HINT = 'Pass e.g. {"lang": "en"}; chunks match when their metadata contains it.';
    END IF;
END;
$$;

-- Vector TopK: the p_top_k chunks nearest to p_embedding, optionally restricted to
-- chunks whose metadata contains p_filter. Uses the collection's HNSW index with
-- ef_search >= p_top_k and a strict-order iterative scan so filters still yield K rows.
CREATE FUNCTION hybridsearch.search_vector(
    p_collection text,
    p_embedding vector,
    p_top_k integer DEFAULT 50,
    p_filter jsonb DEFAULT NULL
)
RETURNS TABLE (chunk_id bigint, vector_rank integer, vector_distance double precision)
LANGUAGE plpgsql STABLE SECURITY INVOKER
-- Function-level SET scopes the set_config() calls below to this function.
SET hnsw.ef_search = 40
SET hnsw.iterative_scan = 'strict_order'
AS $$
DECLARE
    v_collection hybridsearch.collections := hybridsearch.get_collection(p_collection);
    v_filtered   boolean := p_filter IS NOT NULL AND p_filter <> '{}'::jsonb;
BEGIN
    PERFORM hybridsearch.check_top_k(p_top_k);
    PERFORM hybridsearch.check_filter(p_filter);
    IF p_embedding IS NULL OR vector_dims(p_embedding) <> v_collection.dimensions THEN
        RAISE EXCEPTION USING
            ERRCODE = 'invalid_parameter_value',
            MESSAGE = format('query embedding has %s dimensions; collection %L expects %s',
                             coalesce(vector_dims(p_embedding)::text, 'no'),
                             v_collection.name, v_collection.dimensions),
            HINT = format('Embed the query with %s.', v_collection.embedding_model);
    END IF;
    PERFORM set_config('hnsw.ef_search', greatest(40, p_top_k)::text, true);

    -- The inner ORDER BY ... LIMIT is the shape pgvector's index scan needs; the outer
    -- query breaks distance ties by chunk_id so results are deterministic.
    RETURN QUERY EXECUTE format(
        $sql$
        SELECT nearest.chunk_id,
               (row_number() OVER (ORDER BY nearest.distance, nearest.chunk_id))::integer,
               nearest.distance
        FROM (
            SELECT c.chunk_id, c.embedding::vector(%1$s) %2$s $1::vector(%1$s) AS distance
            FROM hybridsearch.chunks c
            WHERE c.collection_id = %3$s %4$s
            ORDER BY c.embedding::vector(%1$s) %2$s $1::vector(%1$s)
            LIMIT $3
        ) AS nearest
        ORDER BY nearest.distance, nearest.chunk_id
        $sql$,
        v_collection.dimensions,
        hybridsearch.distance_operator(v_collection.distance),
        v_collection.collection_id,
        CASE WHEN v_filtered THEN 'AND c.metadata @> $2' ELSE '' END)
    USING p_embedding, p_filter, p_top_k;
END;
$$;

-- Keyword TopK: the p_top_k chunks best matching p_query (any of its terms), ranked
-- by ts_rank_cd with length normalisation, optionally filtered like search_vector.
CREATE FUNCTION hybridsearch.search_keyword(
    p_collection text,
    p_query text,
    p_top_k integer DEFAULT 50,
    p_filter jsonb DEFAULT NULL
)
RETURNS TABLE (chunk_id bigint, keyword_rank integer, keyword_score double precision)
LANGUAGE plpgsql STABLE SECURITY INVOKER
AS $$
DECLARE
    v_collection hybridsearch.collections := hybridsearch.get_collection(p_collection);
    v_query      tsquery := hybridsearch.keyword_query(v_collection.analyzer, p_query);
BEGIN
    PERFORM hybridsearch.check_top_k(p_top_k);
    PERFORM hybridsearch.check_filter(p_filter);
    IF pg_catalog.numnode(v_query) = 0 THEN
        RETURN;  -- no searchable terms: an empty branch, not an error
    END IF;
    RETURN QUERY
    SELECT matched.chunk_id,
           (row_number() OVER (ORDER BY matched.score DESC, matched.chunk_id))::integer,
           matched.score
    FROM (
        SELECT c.chunk_id,
               -- normalisation 1: divide by 1 + log(length) so long chunks don't dominate
               pg_catalog.ts_rank_cd(c.fts, v_query, 1)::double precision AS score
        FROM hybridsearch.chunks c
        WHERE c.collection_id = v_collection.collection_id
          AND c.fts @@ v_query
          AND (p_filter IS NULL OR c.metadata @> p_filter)
        ORDER BY score DESC, c.chunk_id
        LIMIT p_top_k
    ) AS matched
    ORDER BY matched.score DESC, matched.chunk_id;
END;
$$;

-- Fuse two ranked candidate lists (arrays in rank order) into one.
--   rrf:      score = w_v / (k + rank_v) + w_k / (k + rank_k)
--   weighted: score = w_v * norm_v + w_k * norm_k, where norm is min-max normalised
--             within each list (vector: smaller distance is better; a list whose
--             values are all equal normalises to 1)
-- A candidate missing from a list contributes 0 for it. Ties break by chunk_id.
-- hybridsearch.fusion.fuse in Python is the reference implementation of this function.
CREATE FUNCTION hybridsearch.fuse_candidates(
    p_vector_ids bigint[],
    p_vector_distances double precision[],
    p_keyword_ids bigint[],
    p_keyword_scores double precision[],
    p_method text DEFAULT 'rrf',
    p_rrf_k integer DEFAULT 60,
    p_vector_weight double precision DEFAULT 1.0,
    p_keyword_weight double precision DEFAULT 1.0,
    p_limit integer DEFAULT 50
)
RETURNS TABLE (
    chunk_id bigint,
    fused_rank integer,
    fused_score double precision,
    vector_rank integer,
    vector_distance double precision,
    keyword_rank integer,
    keyword_score double precision
)
LANGUAGE plpgsql IMMUTABLE SECURITY INVOKER
AS $$
BEGIN
    IF p_method IS NULL OR p_method NOT IN ('rrf', 'weighted') THEN
        RAISE EXCEPTION USING
            ERRCODE = 'invalid_parameter_value',
            MESSAGE = format('fusion must be rrf or weighted, got %L', p_method);
    END IF;
    IF p_rrf_k IS NULL OR p_rrf_k < 0 THEN
        RAISE EXCEPTION USING
            ERRCODE = 'invalid_parameter_value',
            MESSAGE = format('rrf_k must be >= 0, got %s', coalesce(p_rrf_k::text, 'NULL'));
    END IF;
    IF p_vector_weight IS NULL OR p_keyword_weight IS NULL
       OR p_vector_weight < 0 OR p_keyword_weight < 0
       OR p_vector_weight = 'NaN' OR p_keyword_weight = 'NaN'
       OR p_vector_weight = 'Infinity' OR p_keyword_weight = 'Infinity' THEN
        RAISE EXCEPTION USING
            ERRCODE = 'invalid_parameter_value',
            MESSAGE = 'fusion weights must be finite numbers >= 0';
    END IF;
    PERFORM hybridsearch.check_top_k(p_limit);

    RETURN QUERY
    WITH vec AS (
        SELECT t.id, t.ord::integer AS rnk, t.distance
        FROM unnest(p_vector_ids, p_vector_distances) WITH ORDINALITY AS t(id, distance, ord)
        WHERE t.id IS NOT NULL
    ),
    kw AS (
        SELECT t.id, t.ord::integer AS rnk, t.score
        FROM unnest(p_keyword_ids, p_keyword_scores) WITH ORDINALITY AS t(id, score, ord)
        WHERE t.id IS NOT NULL
    ),
    vec_range AS (SELECT min(vec.distance) AS lo, max(vec.distance) AS hi FROM vec),
    kw_range AS (SELECT min(kw.score) AS lo, max(kw.score) AS hi FROM kw),
    joined AS (
        SELECT coalesce(vec.id, kw.id) AS id,
               vec.rnk AS v_rank, vec.distance AS v_distance,
               kw.rnk AS k_rank, kw.score AS k_score,
               CASE p_method
                   WHEN 'rrf' THEN
                       coalesce(p_vector_weight / (p_rrf_k + vec.rnk), 0)
                       + coalesce(p_keyword_weight / (p_rrf_k + kw.rnk), 0)
                   ELSE
                       CASE WHEN vec.id IS NULL THEN 0
                            WHEN vr.hi = vr.lo THEN p_vector_weight
                            ELSE p_vector_weight * ((vr.hi - vec.distance) / (vr.hi - vr.lo))
                       END
                       + CASE WHEN kw.id IS NULL THEN 0
                              WHEN kr.hi = kr.lo THEN p_keyword_weight
                              ELSE p_keyword_weight * ((kw.score - kr.lo) / (kr.hi - kr.lo))
                         END
               END::double precision AS score
        FROM vec
        FULL JOIN kw ON kw.id = vec.id
        CROSS JOIN vec_range AS vr
        CROSS JOIN kw_range AS kr
    )
    SELECT joined.id,
           (row_number() OVER (ORDER BY joined.score DESC, joined.id))::integer,
           joined.score, joined.v_rank, joined.v_distance, joined.k_rank, joined.k_score
    FROM joined
    ORDER BY joined.score DESC, joined.id
    LIMIT p_limit;
END;
$$;

-- Hybrid TopK: vector TopK and keyword TopK, each filtered, fused in SQL.
-- Pass p_embedding NULL for keyword-only or p_query NULL for vector-only search.
-- Returns the fused TopK with every stage's rank and score and the chunk's content.
CREATE FUNCTION hybridsearch.search_hybrid(
    p_collection text,
    p_embedding vector,
    p_query text,
    p_top_k integer DEFAULT 50,
    p_filter jsonb DEFAULT NULL,
    p_fusion text DEFAULT 'rrf',
    p_rrf_k integer DEFAULT 60,
    p_vector_weight double precision DEFAULT 1.0,
    p_keyword_weight double precision DEFAULT 1.0
)
RETURNS TABLE (
    fused_rank integer,
    chunk_id bigint,
    document_id text,
    content text,
    metadata jsonb,
    vector_rank integer,
    vector_distance double precision,
    keyword_rank integer,
    keyword_score double precision,
    fused_score double precision
)
LANGUAGE plpgsql STABLE SECURITY INVOKER
AS $$
DECLARE
    v_collection hybridsearch.collections := hybridsearch.get_collection(p_collection);
    v_vector_ids bigint[];
    v_distances  double precision[];
    v_keyword_ids bigint[];
    v_scores     double precision[];
BEGIN
    PERFORM hybridsearch.check_top_k(p_top_k);
    PERFORM hybridsearch.check_filter(p_filter);
    IF p_embedding IS NOT NULL THEN
        SELECT array_agg(v.chunk_id ORDER BY v.vector_rank),
               array_agg(v.vector_distance ORDER BY v.vector_rank)
        INTO v_vector_ids, v_distances
        FROM hybridsearch.search_vector(p_collection, p_embedding, p_top_k, p_filter) AS v;
    END IF;
    IF p_query IS NOT NULL THEN
        SELECT array_agg(k.chunk_id ORDER BY k.keyword_rank),
               array_agg(k.keyword_score ORDER BY k.keyword_rank)
        INTO v_keyword_ids, v_scores
        FROM hybridsearch.search_keyword(p_collection, p_query, p_top_k, p_filter) AS k;
    END IF;

    RETURN QUERY
    SELECT f.fused_rank, f.chunk_id, d.external_id, c.content, c.metadata,
           f.vector_rank, f.vector_distance, f.keyword_rank, f.keyword_score, f.fused_score
    FROM hybridsearch.fuse_candidates(
             v_vector_ids, v_distances, v_keyword_ids, v_scores,
             p_fusion, p_rrf_k, p_vector_weight, p_keyword_weight, p_top_k) AS f
    JOIN hybridsearch.chunks AS c
      ON c.collection_id = v_collection.collection_id AND c.chunk_id = f.chunk_id
    JOIN hybridsearch.documents AS d
      ON d.collection_id = c.collection_id AND d.document_id = c.document_id
    ORDER BY f.fused_rank;
END;
$$;
