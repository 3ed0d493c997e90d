/**
 * The referral program (API.md, Referrals). It runs only inside the deposit's and the
 * close's own transactions (the wallets' onDeposit hook; trading's close hook, whose
 * statement, `closeCall`, travels in the close's own round trip),
 * so a bonus or commission commits or rolls back with its cause, and the unique keys
 * of referral_bonuses (referee) and referral_commissions (order, level) make each
 * happen at most once.
 */
import type { Db, Trx } from '../../platform/db/database.js';
import type { WalletType } from '../../platform/db/schema.js';
import { ReadRouter } from '../../platform/db/read-router.js';
import { decodeCursor, toPage } from '../../platform/http/pagination.js';
import { Decimal, formatMoney } from '../../platform/money.js';
import { preparedSql } from '../../platform/db/inline.js';
import { sql } from 'kysely';
import type { FinancialService } from '../wallets/financial.service.js';
import type { WalletChangeRow } from '../wallets/ledger.repository.js';
import type { DepositEvent, WalletService } from '../wallets/wallet.service.js';
import type { CloseHookCall } from '../trading/index.js';
import { claimSignupBonus, listCommissions, paidRefereesAfter, referralStats, referrerChain, referrerChainsAfter } from './referral.repository.js';

export interface ReferralSettings {
  qualifyingDeposit: string;
  bonusReferrer: string;
  bonusReferee: string;
  rates: [string, string, string];
}

/** Chains kept in memory at most (the oldest entry goes first). */
const CHAIN_CACHE_SIZE = 200_000;
/** A row of referral_commissions_pay (node-postgres, snake_case). */
interface CommissionRow { level: number; referrer_id: string; amount: string; old_balance: string; new_balance: string; posting_id: string }

/** The chain of a user nobody referred, shared by all of them. */
const NO_REFERRER: readonly (string | null)[] = Object.freeze([null, null, null]);

/** Reads rows by id in pages of `pageSize` (`read(after, n)`) until a short page or `limit` rows. */
async function readPaged<T>(limit: number, pageSize: number, read: (after: string, n: number) => Promise<T[]>, idOf: (row: T) => string, each: (row: T) => void): Promise<void> {
  let after = '0';
  for (let done = 0; done < limit;) {
    const n = Math.min(pageSize, limit - done);
    const rows = await read(after, n);
    rows.forEach(each);
    done += rows.length;
    if (rows.length < n) return;
    after = idOf(rows[rows.length - 1]!);
  }
}

export class ReferralService {
  /**
   * Referrer chains by user. A user's referrer is set at registration and never
   * changes, so neither does the chain: each process reads it once per user, not once
   * per close, and `preload` reads most of them at start.
   */
  private readonly chains = new Map<string, readonly (string | null)[]>();
  /**
   * Referees whose signup bonus is known to be paid (committed: read at start, or met by
   * a later claim). A bonus is never taken back, so their qualifying deposits need no
   * hook and take the one-call path. The deposit that pays it is not added (its
   * transaction may still roll back): the next qualifying deposit finds the bonus paid.
   */
  private readonly bonusPaid = new Set<string>();

  constructor(
    private readonly db: Db,
    private readonly financial: FinancialService,
    private readonly settings: ReferralSettings,
    // Read routing (issue 7): stats and commission lists may come from a replica.
    private readonly router: ReadRouter = new ReadRouter({ primary: db }),
    // The risk engine hears of credits to wallets with open positions (the trading module's channel).
    private readonly positions: Pick<WalletService, 'tellPositions' | 'positions'> | undefined = undefined,
  ) {}

  /**
   * The signup bonus: the referee's first live deposit of at least the qualifying
   * amount pays both sides once. Smaller deposits neither pay nor forfeit it.
   */
  onDeposit = async (trx: Trx, e: DepositEvent): Promise<WalletChangeRow | void> => {
    if (e.walletType !== 'live' || e.amount.lt(this.settings.qualifyingDeposit)) return;
    const [referrerId] = await this.chainOf(trx, e.userId);
    if (!referrerId) return;
    const claimed = await claimSignupBonus(trx, {
      refereeId: e.userId, referrerId, referrerAmount: this.settings.bonusReferrer, refereeAmount: this.settings.bonusReferee,
      depositPostingId: e.postingId, operationId: e.operationId,
    });
    if (!claimed) {
      // ON CONFLICT waited for the row's transaction: the bonus it found is committed.
      this.rememberBonusPaid(e.userId);
      return;
    }
    const context = { trx, operationId: e.operationId, log: e.log };
    if (new Decimal(this.settings.bonusReferrer).gt(0)) {
      const credited = await this.financial.updateWalletBalance(referrerId, this.settings.bonusReferrer, 'live', 'referral_bonus', { refereeId: e.userId, role: 'referrer' }, context);
      await this.positions?.tellPositions(trx, credited);
    }
    if (new Decimal(this.settings.bonusReferee).gt(0)) {
      // The referee's wallet is the deposit's, whose notice (if it has positions) covers this credit too.
      return this.financial.updateWalletBalance(e.userId, this.settings.bonusReferee, 'live', 'referral_bonus', { referrerId, role: 'referee' }, context);
    }
  };

  /**
   * Commission to each referrer up to level 3 on every live close, `volume × rate`, as
   * the statement trading sends in the close's own round trip (`referral_commissions_pay`,
   * migration 0010): after a user's `order_close` call, after the risk engine's
   * `order_settle` (stop-loss, take-profit, stop-out). Undefined: nobody referred the
   * user. The statement pays only if that operation closed a live order, so it may travel
   * with a close that replays or is rejected. `finish` writes the `logger.financial` line
   * of each commission paid. `db`: the close's transaction, if it has begun (a chain not in
   * memory is read there, not on another connection while the close holds its locks).
   */
  closeCall = async (userId: string, db: Db | Trx): Promise<CloseHookCall | undefined> => {
    const chain = await this.chainOf(db, userId);
    const levels: [string, string][] = [];
    for (let i = 0; i < 3 && chain[i]; i++) levels.push([chain[i]!, this.settings.rates[i]!]);
    if (levels.length === 0) return undefined;
    const json = JSON.stringify(levels);
    const channel = this.positions?.positions().notifyChannel ?? null;
    return {
      statement: (orderId, operationId) => preparedSql(sql`SELECT * FROM referral_commissions_pay(${orderId}::bigint, ${operationId}::text, ${json}::jsonb, ${channel}::text)`),
      finish: (rows, { orderId, operationId, log }) => {
        for (const r of rows as CommissionRow[]) {
          this.financial.logCall(r, 'referral_commission', String(r.referrer_id), 'live', new Decimal(String(r.amount)).toFixed(),
            { operationId, log, orderId }, { level: Number(r.level), refereeId: userId, orderId });
        }
      },
    };
  };

  /**
   * Whether onDeposit may pay anything for this deposit: a live one of at least the
   * qualifying amount by a referred user whose bonus is not known to be paid. Other
   * deposits skip the hook (and take the one-round-trip path).
   */
  mayActOnDeposit = async (userId: string, walletType: WalletType, amount: Decimal): Promise<boolean> => {
    if (walletType !== 'live' || amount.lt(this.settings.qualifyingDeposit) || this.bonusPaid.has(userId)) return false;
    const [referrerId] = await this.chainOf(this.db, userId);
    return Boolean(referrerId);
  };

  /**
   * Reads the users' chains, and the referees whose bonus was paid, in pages of
   * `pageSize` by id, in the background at start, so that `closeCall` and the deposit
   * hook's filter (asked on every close and qualifying deposit) find them in memory; a chain not
   * loaded (a user registered since, a preload still running or failed) is read on first
   * use as before. Neither a chain nor a paid bonus ever changes, so nothing read here
   * goes stale. Fills at most 80 % of the cache, leaving room for the chains read on use.
   * Returns how many chains it added.
   */
  async preload(pageSize = 20_000): Promise<number> {
    const limit = Math.floor(CHAIN_CACHE_SIZE * 0.8);
    let added = 0;
    await readPaged(limit, pageSize, (after, n) => referrerChainsAfter(this.db, after, n), (r) => r.id, ({ id, l1, l2, l3 }) => {
      if (this.chains.has(id)) return;
      this.remember(id, l1 === null ? NO_REFERRER : [l1, l2, l3]);
      added++;
    });
    await readPaged(limit, pageSize, (after, n) => paidRefereesAfter(this.db, after, n), (id) => id, (id) => this.rememberBonusPaid(id));
    return added;
  }

  private rememberBonusPaid(userId: string): void {
    if (this.bonusPaid.size < CHAIN_CACHE_SIZE) this.bonusPaid.add(userId);
  }

  private async chainOf(trx: Db | Trx, userId: string): Promise<readonly (string | null)[]> {
    const known = this.chains.get(userId);
    if (known) return known;
    const chain = await referrerChain(trx, userId);
    this.remember(userId, chain[0] === null ? NO_REFERRER : chain);
    return chain;
  }

  private remember(userId: string, chain: readonly (string | null)[]): void {
    if (!this.chains.has(userId) && this.chains.size >= CHAIN_CACHE_SIZE) this.chains.delete(this.chains.keys().next().value!);
    this.chains.set(userId, chain);
  }

  async stats(userId: string) {
    const s = await this.router.read(userId, (db) => referralStats(db, userId)); // read routing
    if (!s) throw new Error('user vanished');
    const c = [s.c1, s.c2, s.c3].map((v) => new Decimal(v ?? 0));
    return {
      referralCode: s.referralCode,
      referees: { level1: Number(s.level1), level2: Number(s.level2), level3: Number(s.level3) },
      commissions: { total: formatMoney(c[0]!.plus(c[1]!).plus(c[2]!)), level1: formatMoney(c[0]!), level2: formatMoney(c[1]!), level3: formatMoney(c[2]!) },
      bonuses: { total: formatMoney(s.bonuses ?? '0') },
    };
  }

  async commissions(userId: string, limit: number, cursor: string | undefined) {
    const rows = await this.router.read(userId, (db) => listCommissions(db, userId, limit, decodeCursor(cursor))); // read routing
    return toPage(rows, limit, (r) => ({ id: r.id, level: r.level, amount: formatMoney(r.amount), refereeAccountNumber: r.refereeAccountNumber, orderId: r.orderId, createdAt: r.createdAt.toISOString() }));
  }
}
