/**
 * Cursor pagination: newest first by (created_at, id). The cursor carries the
 * creation time in microseconds (PostgreSQL's precision, which a JS Date lacks) and
 * the id, so pages are stable under concurrent inserts.
 */
import { sql, type RawBuilder } from 'kysely';
import { ValidationError } from '../errors.js';

export interface Cursor {
  micros: string;
  id: string;
}

export function encodeCursor(micros: string, id: string): string {
  return Buffer.from(`${micros}.${id}`).toString('base64url');
}

export function decodeCursor(cursor: string | undefined): Cursor | undefined {
  if (cursor === undefined) return undefined;
  const m = /^([0-9]{1,20})\.([0-9]{1,19})$/.exec(Buffer.from(cursor, 'base64url').toString());
  if (!m) throw new ValidationError('Invalid cursor', [{ field: 'cursor', message: 'not a cursor returned by this API' }]);
  return { micros: m[1]!, id: m[2]! };
}

/** The select expression giving a row's creation time in microseconds since the epoch. */
export function createdMicros(column = 'created_at'): RawBuilder<string> {
  return sql<string>`(extract(epoch from ${sql.ref(column)}) * 1000000)::bigint`;
}

/** `(created_at, id) < cursor`, for rows older than the cursor. */
export function olderThan(cursor: Cursor, createdColumn = 'created_at', idColumn = 'id'): RawBuilder<boolean> {
  return sql<boolean>`(${sql.ref(createdColumn)}, ${sql.ref(idColumn)}) < (timestamptz 'epoch' + ${cursor.micros}::bigint * interval '1 microsecond', ${cursor.id}::bigint)`;
}

/** Splits the limit+1 rows a query fetched into a page and its next cursor. */
export function toPage<R extends { id: string; createdMicros: string }, T>(rows: R[], limit: number, map: (r: R) => T) {
  const more = rows.length > limit;
  const items = (more ? rows.slice(0, limit) : rows).map(map);
  const last = rows[limit - 1];
  return { items, nextCursor: more && last ? encodeCursor(last.createdMicros, last.id) : null };
}
