import type { Migration } from 'kysely';
import * as m0001 from './0001_accounts_and_ledger.js';
import * as m0003 from './0003_scheduled_jobs.js';

/** Every migration, in order. Listed explicitly so the compiled build and the tests see the same set. */
export const migrations: Record<string, Migration> = {
  '0001_accounts_and_ledger': m0001,
  '0003_scheduled_jobs': m0003,
};
