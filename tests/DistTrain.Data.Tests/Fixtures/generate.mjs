// Writes the foreign-writer fixtures for ForeignWriterTests.cs with parquet-wasm (the Rust `parquet` crate,
// arrow-rs, compiled to WebAssembly) from Apache Arrow JS tables, then reads every file back with hyparquet
// (an independent JS reader) and checks the documents round-trip.
//
//   npm install parquet-wasm@0.8.0 apache-arrow@21.2.0 hyparquet@1.31.5 hyparquet-compressors@1.1.2
//   node generate.mjs [output folder, default .]
//
// Each file has one column, input_ids: list<int32|int64> (nullable list, nullable element, like pyarrow/HF),
// one row per document. Document d (0 <= d < 40) has length 5 + (d*7 % 23); token k = (d*31 + k*17) % 250.
import { readFileSync, writeFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { Field, Int32, Int64, List, Table, tableToIPC, vectorFromArray } from 'apache-arrow';
import * as pq from 'parquet-wasm';
import { parquetMetadata, parquetReadObjects } from 'hyparquet';
import { compressors } from 'hyparquet-compressors';

const out = process.argv[2] ?? '.';
const DOCS = 40;
const docs = Array.from({ length: DOCS }, (_, d) =>
  Array.from({ length: 5 + (d * 7) % 23 }, (_, k) => (d * 31 + k * 17) % 250));

const files = [
  { name: 'arrowrs_int32_snappy_3rg.parquet', int64: false, compression: pq.Compression.SNAPPY, rowGroupRows: 14 },        // 14+14+12
  { name: 'arrowrs_int64_zstd_2rg.parquet', int64: true, compression: pq.Compression.ZSTD, rowGroupRows: 20 },             // 20+20
  { name: 'arrowrs_int32_gzip.parquet', int64: false, compression: pq.Compression.GZIP, rowGroupRows: DOCS },
  { name: 'arrowrs_int64_uncompressed.parquet', int64: true, compression: pq.Compression.UNCOMPRESSED, rowGroupRows: DOCS },
];

for (const f of files) {
  const element = f.int64 ? new Int64() : new Int32();
  const type = new List(new Field('item', element, true));
  const values = f.int64 ? docs.map(doc => doc.map(BigInt)) : docs;
  const arrow = new Table({ input_ids: vectorFromArray(values, type) });

  const props = new pq.WriterPropertiesBuilder()
    .setCompression(f.compression)
    .setMaxRowGroupSize(f.rowGroupRows)
    .build();
  const bytes = pq.writeParquet(pq.Table.fromIPCStream(tableToIPC(arrow, 'stream')), props);
  const path = join(out, f.name);
  writeFileSync(path, bytes);

  // read back with hyparquet, a reader that shares no code with the writer
  const buf = readFileSync(path);
  const file = buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.byteLength);
  const meta = parquetMetadata(file);
  const rows = await parquetReadObjects({ file, compressors });
  const got = rows.map(r => Array.from(r.input_ids, Number));
  if (JSON.stringify(got) !== JSON.stringify(docs)) throw new Error(`${f.name}: documents do not round-trip`);
  if (meta.row_groups.length !== Math.ceil(DOCS / f.rowGroupRows)) throw new Error(`${f.name}: ${meta.row_groups.length} row groups`);

  const chunks = meta.row_groups.map(rg => rg.columns[0].meta_data);
  console.log(`${f.name}: ${statSync(path).size} bytes, created_by="${meta.created_by}", `
    + `row groups=[${meta.row_groups.map(rg => rg.num_rows)}], codec=${chunks[0].codec}, `
    + `encodings=[${chunks[0].encodings}], physical=${chunks[0].type}, `
    + `page types=[${chunks[0].encoding_stats?.map(s => `${s.page_type}:${s.encoding}`) ?? '?'}]`);
}
