/**
 * Money and other exact decimals. Values travel as strings on the wire and as
 * NUMERIC in PostgreSQL; in between they are Decimal, never a binary float.
 */
import { Decimal as DecimalJs } from 'decimal.js';

/** A private Decimal constructor so no other module's settings can change ours. */
export const Decimal = DecimalJs.clone({ precision: 40, rounding: DecimalJs.ROUND_HALF_EVEN, toExpNeg: -30, toExpPos: 40 });
export type Decimal = InstanceType<typeof Decimal>;

export const MONEY_MAX = new Decimal('1000000000.00');
export const ZERO = new Decimal(0);

/** `^[0-9]+(\.[0-9]{1,N})?$`: no sign, exponent, hex or spaces. */
export function decimalPattern(maxDecimals: number): RegExp {
  return maxDecimals === 0 ? /^[0-9]+$/ : new RegExp(`^[0-9]+(\\.[0-9]{1,${maxDecimals}})?$`);
}
const MONEY_RE = decimalPattern(2);

/** True when `text` is a valid money input: the API.md pattern, > 0, ≤ 1,000,000,000.00. */
export function isMoneyText(text: string): boolean {
  if (!MONEY_RE.test(text) || text.length > 40) return false;
  const d = new Decimal(text);
  return d.gt(0) && d.lte(MONEY_MAX);
}

/** Formats to exactly two decimals (half-to-even when there are more). */
export function formatMoney(value: Decimal | string): string {
  return new Decimal(value).toDecimalPlaces(2, Decimal.ROUND_HALF_EVEN).toFixed(2);
}

/** Rounds half-to-even to the cent, as profits are (API.md, Trading). */
export function roundCents(value: Decimal): Decimal {
  return value.toDecimalPlaces(2, Decimal.ROUND_HALF_EVEN);
}

/** Rounds up (toward +∞) to the cent, as required margin is. */
export function ceilCents(value: Decimal): Decimal {
  return value.toDecimalPlaces(2, Decimal.ROUND_CEIL);
}

/** Formats a fixed number of decimals, for prices (symbol digits) and volumes. */
export function formatFixed(value: Decimal | string, digits: number): string {
  return new Decimal(value).toFixed(digits);
}

export function money(value: string | number | Decimal): Decimal {
  return new Decimal(value);
}
