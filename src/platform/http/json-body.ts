/**
 * Lossless JSON request bodies (API.md, Conventions): a JSON number keeps the text it
 * was sent as, so `1e3` and `1.1000000000000001` can be refused and no value ever
 * passes through a binary float. Duplicate keys and prototype keys are refused.
 */
import { createHash } from 'node:crypto';
import { isLosslessNumber, parse, type LosslessNumber } from 'lossless-json';
import { ValidationError } from '../errors.js';

const FORBIDDEN_KEYS = new Set(['__proto__', 'constructor', 'prototype']);

/** Counts the member names in JSON text (a string followed by `:`). The text is valid JSON. */
function countMembers(text: string): number {
  let count = 0;
  for (let i = 0; i < text.length; i++) {
    if (text.charCodeAt(i) !== 34 /* " */) continue;
    i++;
    while (text.charCodeAt(i) !== 34) i += text.charCodeAt(i) === 92 /* \ */ ? 2 : 1;
    let j = i + 1;
    while (j < text.length && (text[j] === ' ' || text[j] === '\n' || text[j] === '\r' || text[j] === '\t')) j++;
    if (text[j] === ':') count++;
  }
  return count;
}

function walk(value: unknown, visit: (key: string) => void): number {
  if (value === null || typeof value !== 'object' || isLosslessNumber(value)) return 0;
  if (Array.isArray(value)) return value.reduce((n: number, v) => n + walk(v, visit), 0);
  let n = 0;
  for (const [k, v] of Object.entries(value)) {
    visit(k);
    n += 1 + walk(v, visit);
  }
  return n;
}

/** Parses a request body; throws ValidationError (400) on malformed JSON, duplicate or prototype keys. */
export function parseJsonBody(text: string): unknown {
  if (text.trim() === '') return undefined;
  let value: unknown;
  try {
    value = parse(text);
  } catch (e) {
    const dup = /Duplicate key '(.*)'/.exec((e as Error).message);
    if (dup) throw new ValidationError('Duplicate keys are not allowed', [{ field: dup[1], message: 'duplicate key' }]);
    throw new ValidationError('Malformed JSON in request body');
  }
  let forbidden: string | undefined;
  const members = walk(value, (k) => {
    if (FORBIDDEN_KEYS.has(k)) forbidden = k;
  });
  if (forbidden !== undefined) throw new ValidationError('Property name not allowed', [{ field: forbidden, message: 'reserved property name' }]);
  // lossless-json accepts a repeated key when both values are equal; we refuse all repeats.
  if (members !== countMembers(text)) throw new ValidationError('Duplicate keys are not allowed');
  return value;
}

/**
 * A canonical text of a parsed body for idempotency: keys sorted, white space gone,
 * values as sent (the number `50`, the string "50" and "50.00" all differ).
 */
export function canonicalJson(value: unknown): string {
  if (value === undefined) return '';
  if (isLosslessNumber(value)) return (value as LosslessNumber).value;
  if (value === null || typeof value !== 'object') return JSON.stringify(value);
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`;
  const keys = Object.keys(value).sort();
  return `{${keys.map((k) => `${JSON.stringify(k)}:${canonicalJson((value as Record<string, unknown>)[k])}`).join(',')}}`;
}

export function fingerprint(method: string, path: string, body: unknown): string {
  return createHash('sha256').update(`${method}\n${path}\n${canonicalJson(body)}`).digest('base64url');
}

/** After validation, JSON numbers become their exact text; handlers only see strings. */
export function numbersToText(value: unknown): unknown {
  if (isLosslessNumber(value)) return (value as LosslessNumber).value;
  if (value === null || typeof value !== 'object') return value;
  if (Array.isArray(value)) return value.map(numbersToText);
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(value)) out[k] = numbersToText(v);
  return out;
}

export { isLosslessNumber };
