/**
 * Statements with their values written in as SQL literals, for the places where
 * several statements travel in one round trip (PostgreSQL's simple query protocol
 * takes no parameters): BEGIN with the idempotency claim and an operation's first
 * statement, or a stored response with COMMIT. Values are escaped by node-postgres.
 */
import {
  CamelCasePlugin, DummyDriver, Kysely, PostgresAdapter, PostgresIntrospector, PostgresQueryCompiler,
  type Compilable, type RawBuilder,
} from 'kysely';
import { createHash } from 'node:crypto';
import pg from 'pg';
import type { Database } from './schema.js';

/** Quotes a value as an SQL literal. */
export function literal(value: unknown): string {
  if (value === null || value === undefined) return 'NULL';
  if (typeof value === 'string') return pg.escapeLiteral(value);
  if (typeof value === 'number') {
    if (!Number.isFinite(value)) throw new Error(`cannot write ${value} as an SQL literal`);
    return value < 0 ? `(${value})` : String(value);
  }
  if (typeof value === 'bigint') return value < 0n ? `(${value})` : value.toString();
  if (typeof value === 'boolean') return value ? 'TRUE' : 'FALSE';
  if (value instanceof Date) return pg.escapeLiteral(value.toISOString());
  if (Array.isArray(value)) throw new Error('array values cannot be written as one SQL literal');
  return pg.escapeLiteral(JSON.stringify(value));
}

/** Compiles queries only (it has no connection): builder queries get the same camelCase mapping as the app's. */
const compiler = new Kysely<Database>({
  dialect: {
    createAdapter: () => new PostgresAdapter(),
    createDriver: () => new DummyDriver(),
    createIntrospector: (db) => new PostgresIntrospector(db),
    createQueryCompiler: () => new PostgresQueryCompiler(),
  },
  plugins: [new CamelCasePlugin()],
});

// --- prepared statements ------------------------------------------------------------

/**
 * Statements of the money paths, by name. Each is prepared once per connection
 * (PREPARE, by TransactionService before first use) and then run as
 * `EXECUTE name(literal, …)`, which can travel in a multi-statement round trip like
 * any other statement but is not parsed and planned again each time: planning was a
 * third of a deposit's statement time, and 1.8 ms of a transfer's (bench/FINDINGS.md).
 */
const definitions = new Map<string, string>();
const namesByText = new Map<string, string>();

function prepared(compiled: { sql: string; parameters: readonly unknown[] }): string {
  let name = namesByText.get(compiled.sql);
  if (name === undefined) {
    name = `s_${createHash('sha1').update(compiled.sql).digest('hex').slice(0, 20)}`;
    namesByText.set(compiled.sql, name);
    definitions.set(name, compiled.sql);
  }
  return compiled.parameters.length === 0 ? `EXECUTE ${name}` : `EXECUTE ${name}(${compiled.parameters.map(literal).join(', ')})`;
}

/** A query (Kysely builder) as `EXECUTE name(values…)` of a statement prepared per connection. */
export function preparedQuery(query: (db: Kysely<Database>) => Compilable): string {
  return prepared(query(compiler).compile());
}

/** An `sql` template as `EXECUTE name(values…)` of a statement prepared per connection. */
export function preparedSql(query: RawBuilder<unknown>): string {
  return prepared(query.compile(compiler));
}

const EXECUTE = /EXECUTE (s_[0-9a-f]{20})\b/g;

/** The PREPARE statements that `text` needs and `done` (a connection's) does not have yet. */
export function preparationsFor(text: string, done: ReadonlySet<string>): { names: string[]; sql: string } {
  const names: string[] = [];
  for (const m of text.matchAll(EXECUTE)) {
    const name = m[1]!;
    // Unknown names are text that looks like a call (inside a quoted value): not ours to prepare.
    if (definitions.has(name) && !done.has(name) && !names.includes(name)) names.push(name);
  }
  return { names, sql: names.map((n) => `PREPARE ${n} AS ${definitions.get(n)!}`).join(';\n') };
}

/** Column names as the app sees them (node-postgres rows of raw results are snake_case). */
export function camelRow<T>(row: Record<string, unknown>): T {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(row)) out[k.replace(/_([a-z0-9])/g, (_, ch: string) => ch.toUpperCase())] = v;
  return out as T;
}
