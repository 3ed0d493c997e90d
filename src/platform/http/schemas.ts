/**
 * Schema building blocks shared by the modules' route schemas (and so the OpenAPI document).
 */
import { Type, type TSchema } from '@sinclair/typebox';
import type { DecimalRule, IntegerRule } from './validation.js';

/** Documented shape of a decimal input: a string, or a JSON number judged by its text. */
function decimalDoc(rule: DecimalRule, description: string, example: string) {
  const sign = rule.signed ? '-?' : '';
  const pattern = rule.decimals === 0 ? `^${sign}[0-9]+$` : `^${sign}[0-9]+(\\.[0-9]{1,${rule.decimals}})?$`;
  return {
    'x-decimal': rule,
    description: `${description} A string matching \`${pattern}\` or a JSON number with the same text.`,
    examples: [example],
  };
}

/** A money input: > 0, at most 2 decimals, at most 1,000,000,000.00. */
export const MoneyInput = (description = 'Amount in USD.') =>
  Type.Unsafe<string>(decimalDoc({ decimals: 2, gt: '0', max: '1000000000.00' }, description, '100.00'));

/** A signed money input (admin adjustments): non-zero, at most 2 decimals. */
export const SignedMoneyInput = (description = 'Signed amount in USD; a leading - takes money away.') =>
  Type.Unsafe<string>(decimalDoc({ decimals: 2, signed: true, gt: '0', max: '1000000000.00' }, description, '-25.00'));

/** A positive decimal with up to `decimals` places (volumes, prices); finer rules in the service. */
export const DecimalInput = (decimals: number, description: string, example: string) =>
  Type.Unsafe<string>(decimalDoc({ decimals, gt: '0', max: '1000000000' }, description, example));

export const IntegerInput = (rule: IntegerRule, description: string) =>
  Type.Unsafe<number>({ 'x-integer': rule, description, examples: [rule.min ?? 1] });

/** Money on output: a decimal string with 2 decimals. */
export const MoneyString = Type.String({ pattern: '^-?[0-9]+\\.[0-9]{2}$', examples: ['1234.50'] });
export const DecimalString = Type.String({ pattern: '^-?[0-9]+(\\.[0-9]+)?$' });
export const Timestamp = Type.String({ format: 'date-time', examples: ['2026-11-26T09:30:00.000Z'] });
export const IdString = Type.String({ description: 'Opaque identifier', examples: ['1042'] });
export const WalletTypeSchema = Type.Union([Type.Literal('live'), Type.Literal('demo')]);

export const PageQuery = {
  limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 200, default: 50, description: 'Items per page (1..200, default 50)' })),
  cursor: Type.Optional(Type.String({ maxLength: 200, description: 'The nextCursor of the previous page' })),
};

export const Page = <T extends TSchema>(item: T) =>
  Type.Object({ items: Type.Array(item), nextCursor: Type.Union([Type.String(), Type.Null()]) });

export const ErrorBody = Type.Object({
  success: Type.Literal(false),
  operationId: Type.String(),
  error: Type.Object({
    code: Type.String(),
    message: Type.String(),
    details: Type.Optional(Type.Array(Type.Object({ field: Type.Optional(Type.String()), message: Type.String() }))),
  }),
}, { $id: 'ErrorEnvelope', title: 'Error envelope' });

export const Envelope = <T extends TSchema>(data: T) =>
  Type.Object({ success: Type.Literal(true), operationId: Type.String(), data });

export const IdempotencyKeyHeader = Type.Object({
  'idempotency-key': Type.String({
    minLength: 1, maxLength: 255, pattern: '^[A-Za-z0-9_.:-]+$',
    description: 'Required. 1..255 characters of [A-Za-z0-9_.:-]; scoped to the user. Same key + same request replays the stored response.',
  }),
});

/** "No body, or {}": an absent body is validated as null. */
export const EmptyBody = Type.Union([Type.Null(), Type.Object({}, { additionalProperties: false })], { description: 'No body, or {}' });
