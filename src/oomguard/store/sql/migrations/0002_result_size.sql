-- oomguard store, schema version 2: the size of each stored result, so Parquet parts are
-- cut by bytes as well as by rows (a part is built in memory before it is written).
ALTER TABLE results ADD COLUMN size INTEGER;   -- bytes of the pickled value; NULL in v1 rows
