import { sql, type Kysely } from 'kysely';

/**
 * The half-to-even rounding functions (`round_cents_half_even`, 0007; `round_half_even`,
 * 0009) lose STRICT, so that PostgreSQL inlines them. It inlines a SQL function only when
 * a STRICT one's body is strict too, and a CASE is not: each call site then ran through
 * the SQL-function executor, which parses and plans the body again in every transaction.
 * Five such calls in a PL/pgSQL function made a transaction 230 µs slower (7,000 against
 * 38,000 transactions a second, bench/FINDINGS.md, seventh round); an order close makes
 * about seven. Their bodies already return NULL for a NULL argument, so the results are
 * the same.
 */
const FUNCTIONS = ['round_cents_half_even(numeric)', 'round_half_even(numeric, int)'];

export async function up(db: Kysely<unknown>): Promise<void> {
  for (const f of FUNCTIONS) await sql.raw(`ALTER FUNCTION ${f} CALLED ON NULL INPUT`).execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  for (const f of FUNCTIONS) await sql.raw(`ALTER FUNCTION ${f} STRICT`).execute(db);
}
