"""Indexes for the contact list at a million identities (`make bench-identity`).

- The list's order, newest interaction first, as an index of live contacts: the unfiltered first page
  and frequent search terms read the first rows of it and stop.
- Name, remark and phone are searched by "contains" (case-insensitive for name and remark), in Chinese as
  often as not, and a Chinese query is one or two characters long as often as not. pg_trgm cannot answer a
  query shorter than three characters from its index (and needs the extension). So the index holds the
  lower-cased one- and two-character grams of the three fields (`contact_search_grams`, a GIN over a
  text[]), the query asks for all the grams of the query (`contact_search_query_grams`: itself if it is one
  character, else its two-character grams), and the ILIKE / LIKE is checked on the rows found. Gram
  containment is necessary for a match (both sides are lower-cased by the same `lower()`), so the index
  finds every match. GIN `fastupdate` is off: no pending list whose flush would land on one unlucky
  inbound event (each contact update writes its grams at once instead: ~0.3 ms).
- How the planner weighs the two ways to a page, measured on 400,000 contacts: walking the list order
  (the rows' fields checked one by one) against reading the grams' candidates and sorting them. It
  charges both for the gram function on every row they read; with its default cost it judged a walked
  row ~10x cheaper than a candidate, where both take ~2 µs, and walked 20,000 rows for terms the index
  answers from 1,400 (60 ms instead of 5). COST 10000 makes a row a row: it walks only for terms
  frequent enough to fill a page within about as many rows as the index would return. PARALLEL
  RESTRICTED keeps these scans in one process: a page wants its first rows now, and starting workers
  cost 10 to 20 ms, more than the scans they would share.
- openids, external_userids and unionids are matched by prefix: btree indexes with `text_pattern_ops`, so
  `LIKE 'prefix%'` is a range scan whatever the database's collation. Such an index serves equality as
  well, so on identity it replaces the plain ones: the unique key (tenant, channel, external_id) becomes
  (tenant, external_id, channel), and the unionid index likewise (one index fewer to write per identity).
"""

from siyu.core.migrations import sql_migration

ID = "2026-11-21T14:20:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "contact list order, search grams and id prefix indexes"

FORWARDS = [
    # COST and PARALLEL RESTRICTED steer the planner, see above.
    "CREATE FUNCTION contact_search_grams(name text, remark text, phone text) RETURNS text[] "
    "LANGUAGE sql IMMUTABLE PARALLEL RESTRICTED COST 10000 AS $$ "
    "SELECT COALESCE(array_agg(DISTINCT substr(f, i, n)), '{}'::text[]) "
    "FROM unnest(ARRAY[lower(name), lower(remark), lower(phone)]) AS f, "
    "generate_series(1, char_length(f)) AS i, (VALUES (1), (2)) AS w(n) "
    "WHERE i + n - 1 <= char_length(f) $$",
    "CREATE FUNCTION contact_search_query_grams(q text) RETURNS text[] "
    "LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$ "
    "SELECT CASE WHEN char_length(lower(q)) < 2 THEN ARRAY[lower(q)] "
    "ELSE ARRAY(SELECT DISTINCT substr(lower(q), i, 2) FROM generate_series(1, char_length(lower(q)) - 1) AS i) "
    "END $$",
    "CREATE INDEX contact_search_grams ON contact USING gin (contact_search_grams(display_name, remark, phone)) "
    "WITH (fastupdate = off)",
    "CREATE INDEX contact_list_order ON contact (tenant, (COALESCE(last_interaction_at, first_seen_at)) DESC, id DESC) "
    "WHERE merged_into IS NULL",
    # Merged-away contacts too: the API's lookup by unionid finds their survivor through them.
    "CREATE INDEX contact_unionid_prefix ON contact (tenant, unionid text_pattern_ops) WHERE unionid IS NOT NULL",
    # The identity key, rebuilt so that it serves prefixes too (ON CONFLICT (tenant, channel, external_id)
    # infers it: same columns, and text_pattern_ops' equality is plain equality). New one first, so the
    # key is enforced throughout.
    "CREATE UNIQUE INDEX identity_tenant_external_channel ON identity (tenant, external_id text_pattern_ops, channel)",
    "DROP INDEX IF EXISTS identity_tenant_channel_external",
    "DROP INDEX IF EXISTS identity_tenant_unionid",
    "CREATE INDEX identity_tenant_unionid ON identity (tenant, unionid text_pattern_ops) WHERE unionid IS NOT NULL",
]

BACKWARDS = [
    "DROP INDEX IF EXISTS identity_tenant_unionid",
    "CREATE INDEX identity_tenant_unionid ON identity (tenant, unionid) WHERE unionid IS NOT NULL",
    "CREATE UNIQUE INDEX identity_tenant_channel_external ON identity (tenant, channel, external_id)",
    "DROP INDEX IF EXISTS identity_tenant_external_channel",
    "DROP INDEX IF EXISTS contact_unionid_prefix",
    "DROP INDEX IF EXISTS contact_list_order",
    "DROP INDEX IF EXISTS contact_search_grams",
    "DROP FUNCTION IF EXISTS contact_search_query_grams(text)",
    "DROP FUNCTION IF EXISTS contact_search_grams(text, text, text)",
]


forwards = sql_migration(ID, "contacts", DESCRIPTION, FORWARDS, BACKWARDS)
