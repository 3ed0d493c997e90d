/**
 * The arithmetic of a position, exact: decimals only, never a binary float.
 * Margin is rounded up to the cent, profit half-to-even to the cent (API.md, Trading).
 */
import type { OrderSide } from '../../platform/db/schema.js';
import { Decimal, roundCents } from '../../platform/money.js';

export interface PriceQuote {
  bid: Decimal;
  ask: Decimal;
}

/** A buy opens at the ask, a sell at the bid. */
export function openPriceOf(side: OrderSide, q: PriceQuote): Decimal {
  return side === 'buy' ? q.ask : q.bid;
}

/** A buy closes at the bid, a sell at the ask. */
export function closePriceOf(side: OrderSide, q: PriceQuote): Decimal {
  return side === 'buy' ? q.bid : q.ask;
}

/**
 * `volume × contractSize × openPrice / leverage`, rounded up to the cent. The rounding
 * is decided in integers of cents, so no division rounding can tip it.
 */
export function requiredMargin(volume: Decimal, contractSize: Decimal, openPrice: Decimal, leverage: number): Decimal {
  const notionalCents = volume.times(contractSize).times(openPrice).times(100);
  let cents = notionalCents.div(leverage).ceil();
  if (cents.times(leverage).lt(notionalCents)) cents = cents.plus(1);
  while (cents.gt(0) && cents.minus(1).times(leverage).gte(notionalCents)) cents = cents.minus(1);
  return cents.div(100);
}

/** Profit of a position closed at `closePrice`, unrounded. */
export function rawProfit(side: OrderSide, openPrice: Decimal, closePrice: Decimal, exposure: Decimal): Decimal {
  const diff = closePrice.minus(openPrice).times(exposure);
  return side === 'buy' ? diff : diff.neg();
}

/** `(close − open) × volume × contractSize` (negated for a sell), half-to-even to the cent. */
export function profitOf(side: OrderSide, openPrice: Decimal, closePrice: Decimal, volume: Decimal, contractSize: Decimal): Decimal {
  return roundCents(rawProfit(side, openPrice, closePrice, volume.times(contractSize)));
}

/** Decimals of a number as sent (`"1.10"` has 2): inputs are judged by their text. */
export function textDecimals(text: string): number {
  return text.split('.')[1]?.length ?? 0;
}

/**
 * A stop-loss must be on the losing side of the open price and a take-profit on the
 * winning side; returns the offending field and why, or undefined when both are fine.
 */
export function levelProblem(side: OrderSide, openPrice: Decimal, stopLoss: Decimal | null, takeProfit: Decimal | null): { field: 'stopLoss' | 'takeProfit'; message: string } | undefined {
  if (stopLoss) {
    if (side === 'buy' && !stopLoss.lt(openPrice)) return { field: 'stopLoss', message: `must be below the open price ${openPrice.toFixed()} for a buy` };
    if (side === 'sell' && !stopLoss.gt(openPrice)) return { field: 'stopLoss', message: `must be above the open price ${openPrice.toFixed()} for a sell` };
  }
  if (takeProfit) {
    if (side === 'buy' && !takeProfit.gt(openPrice)) return { field: 'takeProfit', message: `must be above the open price ${openPrice.toFixed()} for a buy` };
    if (side === 'sell' && !takeProfit.lt(openPrice)) return { field: 'takeProfit', message: `must be below the open price ${openPrice.toFixed()} for a sell` };
  }
  return undefined;
}

/** Has the quote reached or passed the stop-loss / take-profit? (buy: bid; sell: ask) */
export function stopLossReached(side: OrderSide, level: Decimal, q: PriceQuote): boolean {
  return side === 'buy' ? q.bid.lte(level) : q.ask.gte(level);
}

export function takeProfitReached(side: OrderSide, level: Decimal, q: PriceQuote): boolean {
  return side === 'buy' ? q.bid.gte(level) : q.ask.lte(level);
}

/** `equity / margin × 100` compared exactly with a level in percent: true when at or below it. */
export function levelAtOrBelow(equity: Decimal, margin: Decimal, levelPercent: Decimal): boolean {
  return equity.times(100).lte(levelPercent.times(margin));
}
