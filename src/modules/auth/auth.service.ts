/**
 * Auth use cases: register (user + live and demo wallets, atomically), login with the
 * lock-out rule, logout and password change (revoking every earlier token), /me.
 */
import { randomInt } from 'node:crypto';
import type { Db } from '../../platform/db/database.js';
import type { Role, UserRow } from '../../platform/db/schema.js';
import { DomainError } from '../../platform/errors.js';
import type { AppLogger } from '../../platform/logger.js';
import type { TransactionService } from '../../platform/transaction.service.js';
import type { FinancialService } from '../wallets/financial.service.js';
import {
  bumpTokenVersion, clearLoginFailures, findUserByEmail, findUserById, findUserIdByReferralCode,
  insertUserWithWallets, loginFailureWindow, recordLoginFailure, upsertAdmin,
} from './auth.repository.js';
import { dummyHash, hashPassword, verifyPassword } from './password.js';
import { notifyUserChanged, type UserStateCache } from './user-state.cache.js';

export interface UserView {
  id: string;
  email: string;
  accountNumber: string;
  referralCode: string;
  role: Role;
  createdAt: string;
}

export function toUserView(u: UserRow): UserView {
  return { id: u.id, email: u.email, accountNumber: u.accountNumber, referralCode: u.referralCode, role: u.role, createdAt: u.createdAt.toISOString() };
}

export interface TokenClaims {
  sub: string;
  tv: number;
  role: Role;
}

export type SignToken = (claims: TokenClaims) => string;

const REFERRAL_ALPHABET = 'ABCDEFGHJKLMNPQRSTUVWXYZ23456789';

export function generateAccountNumber(): string {
  return `${randomInt(1, 10)}${String(randomInt(0, 1_000_000_000)).padStart(9, '0')}`;
}

export function generateReferralCode(): string {
  let code = '';
  for (let i = 0; i < 8; i++) code += REFERRAL_ALPHABET[randomInt(REFERRAL_ALPHABET.length)];
  return code;
}

export interface AuthSettings {
  demoInitialBalance: string;
}

export class AuthService {
  /** Called after a committed write of a user (the read router's read-your-writes). */
  afterWrite: (userId: string) => Promise<void> = async () => undefined;
  constructor(
    private readonly db: Db,
    private readonly tx: TransactionService,
    private readonly financial: FinancialService,
    private readonly cache: UserStateCache,
    private readonly sign: SignToken,
    private readonly settings: AuthSettings,
  ) {}

  private token(u: Pick<UserRow, 'id' | 'tokenVersion' | 'role'>): string {
    return this.sign({ sub: u.id, tv: u.tokenVersion, role: u.role });
  }

  async register(input: { email: string; password: string; referralCode?: string }, operationId: string, log: AppLogger) {
    const email = input.email.toLowerCase();
    const passwordHash = await hashPassword(input.password);
    const user = await this.tx.executeWithRetry(async (trx) => {
      let referrerId: string | null = null;
      if (input.referralCode !== undefined) {
        referrerId = (await findUserIdByReferralCode(trx, input.referralCode.toUpperCase())) ?? null;
        if (!referrerId) throw new DomainError('INVALID_REFERRAL_CODE', 'No user has this referral code', [{ field: 'referralCode', message: 'unknown referral code' }]);
      }
      // Account numbers and referral codes are random; a collision just draws again.
      for (let attempt = 0; attempt < 8; attempt++) {
        const created = await insertUserWithWallets(trx, { email, passwordHash, accountNumber: generateAccountNumber(), referralCode: generateReferralCode(), referrerId });
        if (created) {
          if (this.settings.demoInitialBalance !== '0.00' && Number(this.settings.demoInitialBalance) !== 0) {
            await this.financial.updateWalletBalance(created.id, this.settings.demoInitialBalance, 'demo', 'deposit', { reason: 'demo_initial_balance' }, { trx, operationId, log });
          }
          return created;
        }
        if (await findUserByEmail(trx, email)) throw new DomainError('EMAIL_TAKEN', 'An account with this email already exists');
      }
      throw new Error('could not draw a unique account number');
    }, { operation: 'register', log });
    await this.afterWrite(user.id);
    log.info({ userId: user.id, referrerId: user.referrerId }, 'user registered');
    return { user: toUserView(user), token: this.token(user) };
  }

  async login(input: { email: string; password: string }, ip: string, log: AppLogger) {
    const email = input.email.toLowerCase();
    const window = await loginFailureWindow(this.db, email, ip);
    const retry = Math.max(window.pairRetry ?? 0, window.emailRetry ?? 0);
    if (window.pairRetry !== null || window.emailRetry !== null) {
      log.warn({ email, ip }, 'login refused: too many failed attempts');
      throw new DomainError('ACCOUNT_LOCKED', 'Too many failed login attempts; try again later', undefined, Math.max(1, Math.ceil(retry)));
    }
    const user = await findUserByEmail(this.db, email);
    const ok = await verifyPassword(input.password, user?.passwordHash ?? (await dummyHash));
    if (!user || !ok) {
      await recordLoginFailure(this.db, email, ip);
      log.info({ email, ip }, 'login failed');
      throw new DomainError('INVALID_CREDENTIALS', 'Wrong email or password');
    }
    await clearLoginFailures(this.db, email, ip);
    if (user.blocked) throw new DomainError('ACCOUNT_BLOCKED', 'This account is blocked');
    return { user: toUserView(user), token: this.token(user) };
  }

  async me(userId: string): Promise<UserView> {
    const user = await findUserById(this.db, userId);
    if (!user) throw new DomainError('UNAUTHENTICATED', 'Authentication required');
    return toUserView(user);
  }

  /** Revokes every token issued so far (and, through the cache listeners, closes streams). */
  async logout(userId: string, log: AppLogger): Promise<void> {
    await this.tx.executeWithRetry(async (trx) => {
      await bumpTokenVersion(trx, userId);
      await notifyUserChanged(trx, userId);
    }, { operation: 'logout', log });
    this.cache.invalidate(userId);
  }

  async changePassword(userId: string, currentPassword: string, newPassword: string, log: AppLogger): Promise<{ token: string }> {
    const user = await findUserById(this.db, userId);
    if (!user || !(await verifyPassword(currentPassword, user.passwordHash))) {
      throw new DomainError('INVALID_CREDENTIALS', 'The current password is wrong');
    }
    const passwordHash = await hashPassword(newPassword);
    const tokenVersion = await this.tx.executeWithRetry(async (trx) => {
      const v = await bumpTokenVersion(trx, userId, passwordHash);
      await notifyUserChanged(trx, userId);
      return v;
    }, { operation: 'password_change', log });
    this.cache.invalidate(userId);
    return { token: this.token({ id: userId, tokenVersion, role: user.role }) };
  }

  /** Creates or updates the admin of ADMIN_EMAIL / ADMIN_PASSWORD. */
  async ensureAdmin(email: string, password: string, log: AppLogger): Promise<void> {
    const passwordHash = await hashPassword(password);
    const admin = await this.tx.executeWithRetry(async (trx) => {
      const u = await upsertAdmin(trx, email.toLowerCase(), passwordHash, generateAccountNumber(), generateReferralCode());
      await notifyUserChanged(trx, u.id);
      return u;
    }, { operation: 'ensure_admin', log });
    this.cache.invalidate(admin.id);
    log.info({ userId: admin.id, email: admin.email }, 'admin account ready');
  }
}
