/**
 * Request validation. Two Ajv instances: bodies are validated strictly (no type
 * coercion, unknown properties refused, JSON numbers kept lossless and judged by the
 * `x-decimal` / `x-integer` keywords); query strings and params are coerced, since
 * everything there arrives as text.
 */
import { Ajv, type ValidateFunction, type ErrorObject } from 'ajv';
import addFormatsModule from 'ajv-formats';
import type { FastifySchemaCompiler } from 'fastify';
import { Decimal } from '../money.js';
import { isLosslessNumber } from './json-body.js';

const addFormats = addFormatsModule as unknown as (ajv: Ajv) => Ajv;

export interface DecimalRule {
  /** Maximum number of decimals. */
  decimals: number;
  /** Allow a leading `-` (admin adjustments). */
  signed?: boolean;
  /** Exclusive lower bound on the absolute value (money: > 0). */
  gt?: string;
  /** Inclusive upper bound on the absolute value. */
  max?: string;
}

export interface IntegerRule {
  min?: number;
  max?: number;
}

/** The text of a string or a lossless JSON number; undefined for anything else. */
function numericText(data: unknown): string | undefined {
  if (typeof data === 'string') return data;
  if (isLosslessNumber(data)) return (data as { value: string }).value;
  return undefined;
}

/** Ajv fills in instancePath and schemaPath of a keyword's errors. */
function keywordError(message: string): ErrorObject {
  return { keyword: 'x-decimal', message, params: {} } as unknown as ErrorObject;
}

type KeywordValidate = ((schema: unknown, data: unknown) => boolean) & { errors?: ErrorObject[] };

const validateDecimal: KeywordValidate = function validate(schema, data) {
  const rule = schema as DecimalRule;
  const text = numericText(data);
  const fail = (message: string) => {
    (validate as KeywordValidate).errors = [keywordError(message)];
    return false;
  };
  if (text === undefined) return fail('must be a decimal string or a JSON number');
  const body = rule.signed && text.startsWith('-') ? text.slice(1) : text;
  const re = rule.decimals === 0 ? /^[0-9]+$/ : new RegExp(`^[0-9]+(\\.[0-9]{1,${rule.decimals}})?$`);
  if (text.length > 40 || !re.test(body)) {
    return fail(`must be a plain decimal with at most ${rule.decimals} decimals (no sign, exponent or spaces)`);
  }
  const value = new Decimal(body);
  if (rule.gt !== undefined && !value.gt(rule.gt)) return fail(rule.gt === '0' ? 'must be greater than 0' : `must be greater than ${rule.gt}`);
  if (rule.max !== undefined && value.gt(rule.max)) return fail(`must be at most ${rule.max}`);
  return true;
};

const validateInteger: KeywordValidate = function validate(schema, data) {
  const rule = schema as IntegerRule;
  const text = isLosslessNumber(data) ? (data as { value: string }).value : undefined;
  const fail = (message: string) => {
    (validate as KeywordValidate).errors = [{ ...keywordError(message), keyword: 'x-integer' }];
    return false;
  };
  if (text === undefined || !/^-?[0-9]+$/.test(text) || text.length > 12) return fail('must be an integer');
  const n = Number(text);
  if (rule.min !== undefined && n < rule.min) return fail(`must be at least ${rule.min}`);
  if (rule.max !== undefined && n > rule.max) return fail(`must be at most ${rule.max}`);
  return true;
};

function makeAjv(coerce: boolean): Ajv {
  const ajv = new Ajv({
    coerceTypes: coerce ? 'array' : false,
    removeAdditional: false,
    useDefaults: true,
    allErrors: true,
    strict: false,
  });
  addFormats(ajv);
  ajv.addKeyword({ keyword: 'x-decimal', schemaType: 'object', errors: true, validate: validateDecimal });
  ajv.addKeyword({ keyword: 'x-integer', schemaType: 'object', errors: true, validate: validateInteger });
  return ajv;
}

const bodyAjv = makeAjv(false);
const textAjv = makeAjv(true);

export const validatorCompiler: FastifySchemaCompiler<unknown> = ({ schema, httpPart }) => {
  const ajv = httpPart === 'body' ? bodyAjv : textAjv;
  return ajv.compile(schema as object) as ValidateFunction;
};
