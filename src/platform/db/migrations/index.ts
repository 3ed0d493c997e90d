import type { Migration } from 'kysely';
import * as m0001 from './0001_accounts_and_ledger.js';

/** Every migration, in order. Listed explicitly so the compiled build and the tests see the same set. */
export const migrations: Record<string, Migration> = {
  '0001_accounts_and_ledger': m0001,
};
