"""Try to raise/reset the page limit or run engine pragmas from SQL. Expect every one refused."""

from common import Client, token

c = Client(token())
LIMIT = "SELECT * FROM pragma_max_page_count()"
probes = [
    "PRAGMA max_page_count = 100000000",
    "PRAGMA main.max_page_count = 100000000",
    "PRAGMA MAIN.MAX_PAGE_COUNT=100000000",
    "/* c */ PRAGMA /* c */ max_page_count /* c */ = 100000000",
    "PRAGMA \"max_page_count\" = 100000000",
    "PRAGMA [max_page_count](100000000)",
    "PRAGMA temp.max_page_count = 100000000",
    "PRAGMA temp_store = FILE",
    "PRAGMA journal_size_limit = -1",
    "PRAGMA wal_autocheckpoint = 0",
    "PRAGMA journal_mode = DELETE",
    "PRAGMA page_size = 65536",
    "PRAGMA cache_size = -1000000",
    "PRAGMA table_info = 1",  # allowed name, with an argument
]
fetches = [
    "SELECT * FROM pragma_max_page_count(100000000)",
    "SELECT * FROM main.pragma_max_page_count(100000000)",
    "SELECT max_page_count FROM pragma_max_page_count",
    "SELECT * FROM pragma_page_count",
    "SELECT * FROM pragma_journal_size_limit(-1)",
    "SELECT * FROM pragma_wal_autocheckpoint(0)",
    "SELECT * FROM pragma_temp_store(1)",
    "SELECT * FROM pragma_table_info('outbox')",
    "SELECT * FROM pragma_database_list",
    "SELECT * FROM pragma_compile_options",
    "SELECT * FROM sqlite_dbpage",
    "SELECT * FROM pragma_function_list",
]
for s in probes:
    print("exec ", s, "->", c.sql(s))
for s in fetches:
    print("fetch", s, "->", c.q(s))
