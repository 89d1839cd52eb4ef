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

-- ---------------------------------------------------------------------------------
-- Analyzers
--
-- 'mixed' (the default) stems Latin-script words with the english configuration,
-- splits runs of CJK characters into overlapping bigrams (the classic CJK analyzer:
-- 向量数据库 → 向量 量数 数据 据库) and keeps code-like tokens such as XJ-4471-B whole.
-- 'cjk' does the same with the 'simple' configuration. Any other name is used as a
-- PostgreSQL text search configuration ('english', 'simple', ...). Everything runs in
-- the database, so SQL-only users get the same analysis as the Python service.
-- ---------------------------------------------------------------------------------

-- Han, Hiragana, Katakana, Hangul: the scripts written without spaces between words.
CREATE FUNCTION hybridsearch.cjk_pattern()
RETURNS text
LANGUAGE sql IMMUTABLE SECURITY INVOKER
AS $$
    SELECT '[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af]+';
$$;

-- The text search configuration that handles the non-CJK part of the text.
CREATE FUNCTION hybridsearch.analyzer_config(p_analyzer text)
RETURNS regconfig
LANGUAGE sql STABLE SECURITY INVOKER
AS $$
    SELECT CASE p_analyzer
        WHEN 'mixed' THEN 'pg_catalog.english'::regconfig
        WHEN 'cjk' THEN 'pg_catalog.simple'::regconfig
        ELSE p_analyzer::regconfig
    END;
$$;

-- Quote a lexeme for tsvector/tsquery input (no normalisation is applied to it).
CREATE FUNCTION hybridsearch.quote_lexeme(p_lexeme text)
RETURNS text
LANGUAGE sql IMMUTABLE SECURITY INVOKER
AS $$
    SELECT '''' || replace(replace(p_lexeme, '\', '\\'), '''', '''''') || '''';
$$;

-- Overlapping bigrams of every CJK run (a lone character stays a unigram), with
-- consecutive positions inside a run so phrase queries work on them.
CREATE FUNCTION hybridsearch.cjk_bigrams(p_text text)
RETURNS tsvector
LANGUAGE sql IMMUTABLE SECURITY INVOKER
AS $$
    SELECT coalesce(
        string_agg(format('%s:%s', hybridsearch.quote_lexeme(grams.gram), least(grams.pos, 16383)),
                   ' ')::tsvector,
        ''::tsvector)
    FROM (
        SELECT c.ch || coalesce(c.next, '') AS gram,
               -- a gap of one position between runs keeps phrases from spanning them
               row_number() OVER (ORDER BY r.n, c.i) + r.n AS pos
        FROM regexp_matches(p_text, hybridsearch.cjk_pattern(), 'g') WITH ORDINALITY
                 AS m(match, n)
        CROSS JOIN LATERAL (SELECT string_to_array(m.match[1], NULL) AS chars, m.n) AS r
        -- Each character paired with the next in one pass over the split run, linear in
        -- its length (substr(run, i, 2) for every i is quadratic on multibyte text). The
        -- filter must not mention r.chars, which would split the run again for every row.
        CROSS JOIN LATERAL unnest(r.chars, r.chars[2:]) WITH ORDINALITY AS c(ch, next, i)
        WHERE c.next IS NOT NULL OR c.i = 1  -- a one-character run is its own unigram
    ) AS grams;
$$;

-- Code-like tokens (letters and digits joined by - _ . /, with a letter and a digit),
-- lower-cased and kept whole, so part numbers such as XJ-4471-B match exactly.
CREATE FUNCTION hybridsearch.code_tokens(p_text text)
RETURNS tsvector
LANGUAGE sql IMMUTABLE SECURITY INVOKER
AS $$
    SELECT coalesce(
        string_agg(format('%s:%s', hybridsearch.quote_lexeme(lower(m.match[1])),
                          least(m.n, 16383)), ' ')::tsvector,
        ''::tsvector)
    FROM regexp_matches(p_text, '([A-Za-z0-9]+(?:[-_./][A-Za-z0-9]+)+)', 'g') WITH ORDINALITY
             AS m(match, n)
    WHERE m.match[1] ~ '[0-9]' AND m.match[1] ~ '[A-Za-z]';
$$;

-- Full-text representation of a text under an analyzer.
CREATE FUNCTION hybridsearch.document_tsvector(p_analyzer text, p_content text)
RETURNS tsvector
LANGUAGE sql STABLE SECURITY INVOKER
AS $$
    SELECT CASE WHEN p_analyzer IN ('mixed', 'cjk') THEN
            pg_catalog.to_tsvector(
                hybridsearch.analyzer_config(p_analyzer),
                regexp_replace(p_content, hybridsearch.cjk_pattern(), ' ', 'g'))
            || hybridsearch.cjk_bigrams(p_content)
            || hybridsearch.code_tokens(p_content)
        ELSE pg_catalog.to_tsvector(hybridsearch.analyzer_config(p_analyzer), p_content)
    END;
$$;

-- Term frequencies of a tsvector as {lexeme: count}; BM25 looks tf up here.
CREATE FUNCTION hybridsearch.term_freqs(p_fts tsvector)
RETURNS jsonb
LANGUAGE sql IMMUTABLE SECURITY INVOKER
AS $$
    SELECT coalesce(
        jsonb_object_agg(u.lexeme, coalesce(array_length(u.positions, 1), 1)), '{}'::jsonb)
    FROM unnest(p_fts) AS u;
$$;

-- Number of tokens a tsvector holds (the BM25 document length).
CREATE FUNCTION hybridsearch.term_count(p_fts tsvector)
RETURNS integer
LANGUAGE sql IMMUTABLE SECURITY INVOKER
AS $$
    SELECT coalesce(sum(coalesce(array_length(u.positions, 1), 1)), 0)::integer
    FROM unnest(p_fts) AS u;
$$;

-- ---------------------------------------------------------------------------------
-- Keyword queries: web-search syntax, never an error
--
--   words        scored with BM25; a chunk needs any one of them (OR is the default,
--                and the word OR is accepted and ignored)
--   "a phrase"   the chunk must contain the phrase; its words are scored too
--   -word        the chunk must not contain the word
--   -"a phrase"  the chunk must not contain the phrase
-- Any other character is treated as text; an unbalanced quote runs to the end.
-- Only the first 256 tokens of a query are read, and the first 256 words of a phrase.
-- ---------------------------------------------------------------------------------

CREATE TYPE hybridsearch.keyword_query AS (
    terms     text[],   -- distinct lexemes to score
    required  tsquery,  -- phrases that must match (NULL: none)
    excluded  tsquery,  -- what must not match (NULL: nothing)
    highlight tsquery   -- every positive lexeme OR-ed, for snippets
);

-- A tsquery for analyzed text: its lexemes in order joined by <-> (a phrase) or by |.
CREATE FUNCTION hybridsearch.text_tsquery(p_analyzer text, p_text text, p_phrase boolean)
RETURNS tsquery
LANGUAGE sql STABLE SECURITY INVOKER
AS $$
    SELECT string_agg(
               hybridsearch.quote_lexeme(u.lexeme),
               CASE WHEN p_phrase THEN ' <-> ' ELSE ' | ' END
               ORDER BY p.pos, u.lexeme)::tsquery
    FROM unnest(hybridsearch.document_tsvector(p_analyzer, p_text)) AS u
    CROSS JOIN LATERAL unnest(coalesce(u.positions, '{1}'::smallint[])) AS p(pos)
    -- a word list needs each lexeme once; a phrase keeps repeats in order
    WHERE p_phrase OR p.pos = coalesce(u.positions[1], 1);
$$;

CREATE FUNCTION hybridsearch.parse_keyword_query(p_analyzer text, p_query text)
RETURNS hybridsearch.keyword_query
LANGUAGE plpgsql STABLE SECURITY INVOKER
AS $$
DECLARE
    v_token   text;
    v_body    text;
    v_negated boolean;
    v_phrase  boolean;
    v_part    tsquery;
    v_terms   text[] := '{}';
    v_result  hybridsearch.keyword_query;
BEGIN
    FOR v_token IN
        SELECT t.match[1]
        FROM regexp_matches(coalesce(p_query, ''), '(-?"[^"]*"?|[^\s"]+)', 'g') AS t(match)
        LIMIT 256
    LOOP
        v_negated := v_token LIKE '-_%';
        v_body := CASE WHEN v_negated THEN substr(v_token, 2) ELSE v_token END;
        v_phrase := v_body LIKE '"%';
        v_body := btrim(v_body, '"');
        IF v_phrase THEN
            -- one tsvector of a megabyte phrase would exceed PostgreSQL's limit (54000)
            v_body := array_to_string(
                (regexp_split_to_array(btrim(v_body), '\s+'))[1:256], ' ');
        END IF;
        CONTINUE WHEN v_body = 'OR' AND NOT v_phrase;
        v_part := hybridsearch.text_tsquery(p_analyzer, v_body, v_phrase);
        CONTINUE WHEN v_part IS NULL;
        IF v_negated THEN
            v_result.excluded := CASE WHEN v_result.excluded IS NULL THEN v_part
                                      ELSE v_result.excluded || v_part END;
            CONTINUE;
        END IF;
        IF v_phrase AND pg_catalog.numnode(v_part) > 1 THEN
            v_result.required := CASE WHEN v_result.required IS NULL THEN v_part
                                      ELSE v_result.required && v_part END;
        END IF;
        v_terms := v_terms || pg_catalog.tsvector_to_array(
            hybridsearch.document_tsvector(p_analyzer, v_body));
    END LOOP;
    SELECT coalesce(array_agg(DISTINCT t.term ORDER BY t.term), '{}'),
           string_agg(DISTINCT hybridsearch.quote_lexeme(t.term), ' | ')::tsquery
    INTO v_result.terms, v_result.highlight
    FROM unnest(v_terms) AS t(term);
    RETURN v_result;
END;
$$;

-- Wrap every CJK run of p_query (two characters or more) found in p_text in <mark>.
CREATE FUNCTION hybridsearch.mark_cjk(p_text text, p_query text)
RETURNS text
LANGUAGE plpgsql IMMUTABLE SECURITY INVOKER
AS $$
DECLARE
    v_run text;
BEGIN
    -- longest runs first, so a run inside a longer one is not marked twice
    FOR v_run IN
        SELECT runs.run
        FROM (SELECT DISTINCT m.match[1] AS run
              FROM regexp_matches(coalesce(p_query, ''), hybridsearch.cjk_pattern(), 'g')
                   AS m(match)) AS runs
        WHERE length(runs.run) >= 2
        ORDER BY length(runs.run) DESC, runs.run
        LIMIT 32
    LOOP
        p_text := replace(p_text, v_run, '<mark>' || v_run || '</mark>');
    END LOOP;
    RETURN p_text;
END;
$$;

-- A snippet of p_content around the matches of p_query, matches wrapped in <mark>.
CREATE FUNCTION hybridsearch.highlight(p_analyzer text, p_content text, p_query text)
RETURNS text
LANGUAGE sql STABLE SECURITY INVOKER
AS $$
    SELECT CASE
        WHEN q.highlight IS NULL THEN left(p_content, 240)
        ELSE hybridsearch.mark_cjk(
            pg_catalog.ts_headline(
                hybridsearch.analyzer_config(p_analyzer), p_content, q.highlight,
                'StartSel=<mark>, StopSel=</mark>, MaxFragments=2, MaxWords=30, MinWords=10'),
            CASE WHEN p_analyzer IN ('mixed', 'cjk') THEN p_query END)
    END
    FROM hybridsearch.parse_keyword_query(p_analyzer, p_query) AS q;
$$;

-- Create a collection and its chunk partition with an HNSW index and a dimension check.
CREATE FUNCTION hybridsearch.create_collection(
    p_name text,
    p_embedding_model text,
    p_dimensions integer,
    p_distance text DEFAULT 'cosine',
    p_analyzer text DEFAULT 'mixed',
    p_settings jsonb DEFAULT '{}',
    p_bm25_k1 double precision DEFAULT 1.2,
    p_bm25_b double precision DEFAULT 0.75
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
        PERFORM hybridsearch.analyzer_config(p_analyzer);
    EXCEPTION WHEN undefined_object OR invalid_name OR null_value_not_allowed THEN
        RAISE EXCEPTION USING
            ERRCODE = 'invalid_parameter_value',
            MESSAGE = format('unknown analyzer %L', p_analyzer),
            HINT = 'Use mixed (default), cjk, or a text search configuration such as english.';
    END;
    INSERT INTO hybridsearch.collections
        (name, embedding_model, dimensions, distance, analyzer, settings, bm25_k1, bm25_b)
    VALUES (p_name, p_embedding_model, p_dimensions, p_distance, p_analyzer,
            coalesce(p_settings, '{}'), p_bm25_k1, p_bm25_b)
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
-- chunks whose metadata contains p_filter, and always to the transaction's tenant
-- when one is set (hybridsearch.current_tenant()). Uses the collection's HNSW index with
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
    v_tenant     text := hybridsearch.current_tenant();
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
            WHERE c.collection_id = %3$s %4$s %5$s
            ORDER BY c.embedding::vector(%1$s) %2$s $1::vector(%1$s)
            LIMIT $3
        ) AS nearest
        ORDER BY nearest.distance, nearest.chunk_id
        $sql$,
        v_collection.dimensions,
        hybridsearch.distance_operator(v_collection.distance),
        v_collection.collection_id,
        CASE WHEN v_filtered THEN 'AND c.metadata @> $2' ELSE '' END,
        -- explicit as well as by row-level security, for roles that bypass the policies
        CASE WHEN v_tenant IS NOT NULL THEN 'AND c.tenant_id = $4' ELSE '' END)
    USING p_embedding, p_filter, p_top_k, v_tenant;
END;
$$;

-- Keyword TopK: Okapi BM25 over the chunks matching p_query (web-search syntax, see
-- parse_keyword_query), optionally filtered like search_vector.
--
--   score(c) = sum over query terms t in c of
--              idf(t) * tf * (k1 + 1) / (tf + k1 * (1 - b + b * len(c) / avglen))
--   idf(t)   = ln(1 + (N - df(t) + 0.5) / (df(t) + 0.5))       (never negative)
--
-- N, avglen and df come from collection_stats and term_stats, exact in this snapshot.
-- Evaluation is exact and uses MaxScore dynamic pruning: terms are visited rarest
-- first; each step scores only chunks holding the step's term and none of the earlier
-- ones, and the loop stops as soon as the unvisited terms together (at most
-- idf * (k1 + 1) each) cannot lift an unseen chunk above the current K-th score. The
-- common terms of a query, whose postings are longest, are therefore rarely read.
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
    v_query      hybridsearch.keyword_query;
    v_k1         double precision := v_collection.bm25_k1;
    v_b          double precision := v_collection.bm25_b;
    v_chunks     double precision;
    v_avglen     double precision;
    v_terms      text[];
    v_idf        double precision[];
    v_bound      double precision[];
    v_remaining  double precision;
    v_step       tsquery;
    v_ids        bigint[] := '{}';
    v_scores     double precision[] := '{}';
    v_threshold  double precision := 0;
    v_tenant     text := hybridsearch.current_tenant();
BEGIN
    PERFORM hybridsearch.check_top_k(p_top_k);
    PERFORM hybridsearch.check_filter(p_filter);
    v_query := hybridsearch.parse_keyword_query(v_collection.analyzer, p_query);
    IF cardinality(v_query.terms) = 0 THEN
        RETURN;  -- nothing searchable (stop words, punctuation): an empty branch
    END IF;

    SELECT sum(s.chunks), sum(s.terms)::double precision / nullif(sum(s.chunks), 0)
    INTO v_chunks, v_avglen
    FROM hybridsearch.collection_stats AS s
    WHERE s.collection_id = v_collection.collection_id;
    IF coalesce(v_chunks, 0) = 0 THEN
        RETURN;
    END IF;

    -- Query terms present in the collection, rarest (highest bound) first.
    SELECT array_agg(t.term ORDER BY t.idf DESC, t.term),
           array_agg(t.idf ORDER BY t.idf DESC, t.term),
           array_agg(t.idf * (v_k1 + 1) ORDER BY t.idf DESC, t.term)
    INTO v_terms, v_idf, v_bound
    FROM (
        SELECT q.term, ln(1 + (v_chunks - d.df + 0.5) / (d.df + 0.5)) AS idf
        FROM unnest(v_query.terms) AS q(term)
        CROSS JOIN LATERAL (
            SELECT sum(ts.df)::double precision AS df
            FROM hybridsearch.term_stats AS ts
            WHERE ts.collection_id = v_collection.collection_id AND ts.term = q.term
        ) AS d
        WHERE d.df > 0
    ) AS t;
    IF v_terms IS NULL THEN
        RETURN;
    END IF;
    SELECT sum(x) INTO v_remaining FROM unnest(v_bound) AS x;

    FOR i IN 1 .. cardinality(v_terms) LOOP
        -- Strict: a chunk tying the K-th score could still win on chunk_id.
        EXIT WHEN cardinality(v_ids) = p_top_k AND v_remaining < v_threshold;
        -- Chunks holding this term (an exact GIN lookup) but none of the terms already
        -- visited (checked on term_freqs, which scoring reads anyway).
        v_step := hybridsearch.quote_lexeme(v_terms[i])::tsquery;
        v_remaining := v_remaining - v_bound[i];

        WITH step AS (
            SELECT c.chunk_id,
                   (SELECT sum(q.idf * (tf.v * (v_k1 + 1))
                               / (tf.v + v_k1 * (1 - v_b + v_b * c.term_count / v_avglen)))
                    FROM unnest(v_terms, v_idf) AS q(term, idf)
                    CROSS JOIN LATERAL (SELECT (c.term_freqs ->> q.term)::double precision AS v)
                         AS tf
                    WHERE tf.v IS NOT NULL) AS score
            FROM hybridsearch.chunks AS c
            WHERE c.collection_id = v_collection.collection_id
              AND c.fts @@ v_step
              AND NOT c.term_freqs ?| v_terms[1:i - 1]
              AND (v_query.required IS NULL OR c.fts @@ v_query.required)
              AND (v_query.excluded IS NULL OR NOT c.fts @@ v_query.excluded)
              AND (p_filter IS NULL OR c.metadata @> p_filter)
              AND (v_tenant IS NULL OR c.tenant_id = v_tenant)
            ORDER BY score DESC, c.chunk_id
            LIMIT p_top_k
        ),
        merged AS (
            SELECT m.id, m.score
            FROM (SELECT * FROM unnest(v_ids, v_scores) AS b(id, score)
                  UNION ALL
                  SELECT step.chunk_id, step.score FROM step) AS m
            ORDER BY m.score DESC, m.id
            LIMIT p_top_k
        )
        SELECT coalesce(array_agg(merged.id ORDER BY merged.score DESC, merged.id), '{}'),
               coalesce(array_agg(merged.score ORDER BY merged.score DESC, merged.id), '{}')
        INTO v_ids, v_scores
        FROM merged;
        IF cardinality(v_ids) = p_top_k THEN
            v_threshold := v_scores[p_top_k];
        END IF;
    END LOOP;

    RETURN QUERY
    SELECT r.id, r.rnk::integer, r.score
    FROM unnest(v_ids, v_scores) WITH ORDINALITY AS r(id, score, rnk);
END;
$$;

-- A weight's share of a fused score: p_weight * p_fraction, for a weight >= 0 and a
-- fraction in [0, 1]. A share below 1e-300 counts as 0: PostgreSQL raises 22003 where
-- IEEE arithmetic rounds a tiny product to 0. In effect a weight below about 1e-290
-- counts as 0.
CREATE FUNCTION hybridsearch.fusion_share(
    p_weight double precision,
    p_fraction double precision
)
RETURNS double precision
LANGUAGE sql IMMUTABLE SECURITY INVOKER
AS $$
    SELECT CASE
        WHEN p_weight = 0 OR p_fraction = 0 THEN 0
        WHEN ln(p_weight) + ln(p_fraction) < -690.8 THEN 0  -- ln(1e-300) = -690.78
        ELSE p_weight * p_fraction
    END;
$$;

-- p_a + p_b for shares >= 0, saturating at the largest double instead of raising 22003.
CREATE FUNCTION hybridsearch.fusion_sum(p_a double precision, p_b double precision)
RETURNS double precision
LANGUAGE sql IMMUTABLE SECURITY INVOKER
AS $$
    SELECT CASE
        WHEN p_a >= 1.7976931348623157e308 - p_b THEN 1.7976931348623157e308
        ELSE p_a + p_b
    END;
$$;

-- Fuse two ranked candidate lists (arrays in rank order) into one.
--   rrf:      score = w_v * (1 / (k + rank_v)) + w_k * (1 / (k + rank_k))
--   weighted: score = w_v * norm_v + w_k * norm_k, where norm is min-max normalised
--             within each list (vector: smaller distance is better; a list whose
--             values are all equal normalises to 1)
-- A candidate missing from a list contributes 0 for it. Ties break by chunk_id.
-- Scores are computed in double precision and never overflow or underflow: each share
-- is hybridsearch.fusion_share, the sum is hybridsearch.fusion_sum.
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
                   WHEN 'rrf' THEN hybridsearch.fusion_sum(
                       -- k + rank in double precision: rrf_k may be up to 2^31 - 1
                       coalesce(hybridsearch.fusion_share(
                           p_vector_weight, 1 / (p_rrf_k::double precision + vec.rnk)), 0),
                       coalesce(hybridsearch.fusion_share(
                           p_keyword_weight, 1 / (p_rrf_k::double precision + kw.rnk)), 0))
                   ELSE hybridsearch.fusion_sum(
                       CASE WHEN vec.id IS NULL THEN 0
                            WHEN vr.hi = vr.lo THEN p_vector_weight
                            ELSE hybridsearch.fusion_share(
                                p_vector_weight, (vr.hi - vec.distance) / (vr.hi - vr.lo))
                       END,
                       CASE WHEN kw.id IS NULL THEN 0
                            WHEN kr.hi = kr.lo THEN p_keyword_weight
                            ELSE hybridsearch.fusion_share(
                                p_keyword_weight, (kw.score - kr.lo) / (kr.hi - kr.lo))
                       END)
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
