import { Type } from '@sinclair/typebox';
import type { FastifyInstance } from 'fastify';
import { sendData, sendOutcome } from '../../platform/http/envelope.js';
import { IdempotencyKeyHeader, MoneyInput, PageQuery, Timestamp, WalletTypeSchema } from '../../platform/http/schemas.js';
import { asAppLogger } from '../../platform/logger.js';
import type { WalletType } from '../../platform/db/schema.js';
import { TRANSACTION_TYPES, type WalletService } from './wallet.service.js';

const TypeParams = Type.Object({ type: WalletTypeSchema });

export function walletRoutes(app: FastifyInstance, wallets: WalletService) {
  const ctx = (req: import('fastify').FastifyRequest) => ({ userId: req.authUser!.id, operationId: req.id, log: asAppLogger(req.log) });
  const money = { auth: true, idempotent: true, resourceParams: { type: 'walletType' as const } };

  app.get('/api/v1/wallets', { config: { auth: true }, schema: { tags: ['wallets'], summary: 'Both wallets of the user' } }, async (req, reply) =>
    sendData(reply, 200, { items: await wallets.listWallets(req.authUser!.id) }));

  app.get<{ Params: { type: WalletType } }>('/api/v1/wallets/:type', {
    config: { auth: true, resourceParams: { type: 'walletType' } },
    schema: { tags: ['wallets'], summary: 'One wallet, valued at current quotes', params: TypeParams },
  }, async (req, reply) => sendData(reply, 200, { wallet: await wallets.getWallet(req.authUser!.id, req.params.type) }));

  app.post<{ Params: { type: WalletType }; Body: { amount: string; paymentMethod?: string } }>('/api/v1/wallets/:type/deposit', {
    config: money,
    schema: {
      tags: ['wallets'], summary: 'Deposit money', params: TypeParams, headers: IdempotencyKeyHeader,
      body: Type.Object({ amount: MoneyInput(), paymentMethod: Type.Optional(Type.String({ minLength: 1, maxLength: 64 })) }, { additionalProperties: false }),
    },
  }, async (req, reply) => sendOutcome(reply, await wallets.deposit(req.idempotencyKey!, ctx(req), req.params.type, req.body.amount, req.body.paymentMethod)));

  app.post<{ Params: { type: WalletType }; Body: { amount: string } }>('/api/v1/wallets/:type/withdraw', {
    config: money,
    schema: {
      tags: ['wallets'], summary: 'Withdraw money (at most min(balance - margin, freeMargin))', params: TypeParams, headers: IdempotencyKeyHeader,
      body: Type.Object({ amount: MoneyInput() }, { additionalProperties: false }),
    },
  }, async (req, reply) => sendOutcome(reply, await wallets.withdraw(req.idempotencyKey!, ctx(req), req.params.type, req.body.amount)));

  app.post<{ Params: { type: WalletType }; Body: { toAccountNumber: string; amount: string; note?: string } }>('/api/v1/wallets/:type/transfer', {
    config: money,
    schema: {
      tags: ['wallets'], summary: "Transfer to the same wallet type of another user's account number", params: TypeParams, headers: IdempotencyKeyHeader,
      body: Type.Object({
        toAccountNumber: Type.String({ minLength: 1, maxLength: 64 }),
        amount: MoneyInput(),
        note: Type.Optional(Type.String({ maxLength: 200 })),
      }, { additionalProperties: false }),
    },
  }, async (req, reply) => sendOutcome(reply, await wallets.transfer(req.idempotencyKey!, ctx(req), req.params.type, req.body.toAccountNumber, req.body.amount, req.body.note)));

  app.get<{ Params: { type: WalletType }; Querystring: { limit: number; cursor?: string; type?: string; from?: string; to?: string } }>('/api/v1/wallets/:type/transactions', {
    config: { auth: true, resourceParams: { type: 'walletType' } },
    schema: {
      tags: ['wallets'], summary: "The wallet's transactions, newest first", params: TypeParams,
      querystring: Type.Object({
        ...PageQuery,
        type: Type.Optional(Type.Union(TRANSACTION_TYPES.map((t) => Type.Literal(t)))),
        from: Type.Optional(Timestamp),
        to: Type.Optional(Timestamp),
      }),
    },
  }, async (req, reply) => sendData(reply, 200, await wallets.history(req.authUser!.id, req.params.type, req.query)));
}
