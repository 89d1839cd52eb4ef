-- Text analysis: analyzers feeding to_tsvector (CJK bigrams, code tokens), the
-- keyword query parser and highlighting.
--
-- The current source of these functions (see sql/README.md): edit here, and ship the
-- change in a new alembic revision.

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
CREATE OR REPLACE FUNCTION hybridsearch.cjk_pattern()
RETURNS text
LANGUAGE sql IMMUTABLE SECURITY INVOKER
AS $$
    SELECT '[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af]+';
$$;

-- The text search configuration that handles the non-CJK part of the text.
CREATE OR REPLACE FUNCTION hybridsearch.analyzer_config(p_analyzer text)
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
CREATE OR REPLACE FUNCTION hybridsearch.quote_lexeme(p_lexeme text)
RETURNS text
LANGUAGE sql IMMUTABLE SECURITY INVOKER
AS $$
    SELECT '''' || replace(replace(p_lexeme, '\', '\\'), '''', '''''') || '''';
$$;

-- Overlapping bigrams of every CJK run (a lone character stays a unigram), with
-- consecutive positions inside a run so phrase queries work on them.
CREATE OR REPLACE FUNCTION hybridsearch.cjk_bigrams(p_text text)
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
CREATE OR REPLACE FUNCTION hybridsearch.code_tokens(p_text text)
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
CREATE OR REPLACE FUNCTION hybridsearch.document_tsvector(p_analyzer text, p_content text)
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

-- A tsquery for analyzed text: its lexemes in order joined by <-> (a phrase) or by |.
CREATE OR REPLACE FUNCTION hybridsearch.text_tsquery(p_analyzer text, p_text text, p_phrase boolean)
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

CREATE OR REPLACE FUNCTION hybridsearch.parse_keyword_query(p_analyzer text, p_query text)
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
CREATE OR REPLACE FUNCTION hybridsearch.mark_cjk(p_text text, p_query text)
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
CREATE OR REPLACE FUNCTION hybridsearch.highlight(p_analyzer text, p_content text, p_query text)
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
