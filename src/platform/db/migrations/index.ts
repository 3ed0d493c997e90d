import type { Migration } from 'kysely';
import * as m0001 from './0001_accounts_and_ledger.js';
import * as m0003 from './0003_scheduled_jobs.js';
import * as m0004 from './0004_trading.js';
import * as m0005 from './0005_referrals.js';
import * as m0006 from './0006_lighter_writes.js';
import * as m0007 from './0007_one_round_trip_money.js';
import * as m0008 from './0008_one_round_trip_order_open.js';
import * as m0009 from './0009_order_settlement.js';
import * as m0010 from './0010_referral_commissions_call.js';
import * as m0011 from './0011_deposit_tells_the_engine.js';
import * as m0012 from './0012_transfer_tells_the_recipient.js';
import * as m0013 from './0013_inlined_rounding.js';

/** Every migration, in order. Listed explicitly so the compiled build and the tests see the same set. */
export const migrations: Record<string, Migration> = {
  '0001_accounts_and_ledger': m0001,
  '0003_scheduled_jobs': m0003,
  '0004_trading': m0004,
  '0005_referrals': m0005,
  '0006_lighter_writes': m0006,
  '0007_one_round_trip_money': m0007,
  '0008_one_round_trip_order_open': m0008,
  '0009_order_settlement': m0009,
  '0010_referral_commissions_call': m0010,
  '0011_deposit_tells_the_engine': m0011,
  '0012_transfer_tells_the_recipient': m0012,
  '0013_inlined_rounding': m0013,
};
