/**
 * Timestamps as the host records them (RFC 3339 in UTC with microseconds,
 * `2026-12-02T03:22:37.123456Z`) and as timers take them (milliseconds since the Unix epoch).
 *
 * Time inside a plugin is frozen, so projections and policies take it from events. The text is
 * parsed here rather than with `Date.parse`, whose handling of six fraction digits is not
 * specified and differs between engines.
 * @module
 */

const TIMESTAMP =
  /^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?(?:([Zz])|([+-])(\d{2}):(\d{2}))$/;

/**
 * Milliseconds since the Unix epoch of an RFC 3339 timestamp such as
 * `2026-12-02T03:22:37.123456Z` (any number of fraction digits, `Z` or a `±HH:MM` offset);
 * digits beyond the millisecond are dropped, so microseconds are floored.
 * @param {string} text
 * @returns {number}
 */
export function millisFromRfc3339(text) {
  const millis = parse(String(text));
  if (millis === undefined) {
    throw new TypeError(
      `timestamp ${JSON.stringify(text)} is not RFC 3339 (expected e.g. 2026-11-23T19:35:53.123456Z) at or after 1970`,
    );
  }
  return millis;
}

/**
 * The RFC 3339 UTC timestamp, with microseconds as the host writes them, of `millis` since the
 * Unix epoch.
 * @param {number} millis
 * @returns {string}
 */
export function rfc3339FromMillis(millis) {
  const whole = new Date(millis).toISOString(); // 2026-12-02T03:22:37.123Z
  return `${whole.slice(0, 23)}000Z`;
}

function parse(text) {
  const match = TIMESTAMP.exec(text);
  if (!match) return undefined;
  const [year, month, day, hour, minute, second] = match.slice(1, 7).map(Number);
  const fraction = match[7];
  if (month < 1 || month > 12 || day < 1 || day > daysInMonth(year, month)) return undefined;
  if (hour > 23 || minute > 59 || second > 60) return undefined;
  // The first three fraction digits are the milliseconds; the rest are dropped, not rounded.
  const millis = fraction === undefined ? 0 : Number(fraction.slice(0, 3).padEnd(3, '0'));
  let offsetSeconds = 0;
  if (match[8] === undefined) {
    offsetSeconds = Number(match[10]) * 3600 + Number(match[11]) * 60;
    if (match[9] === '-') offsetSeconds = -offsetSeconds;
  }
  const seconds =
    daysFromCivil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second - offsetSeconds;
  const total = seconds * 1000 + millis;
  return total < 0 ? undefined : total;
}

function daysInMonth(year, month) {
  if (month === 2) return (year % 4 === 0 && year % 100 !== 0) || year % 400 === 0 ? 29 : 28;
  return [4, 6, 9, 11].includes(month) ? 30 : 31;
}

/** Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm). */
function daysFromCivil(year, month, day) {
  const y = month <= 2 ? year - 1 : year;
  const era = Math.floor(y / 400);
  const yearOfEra = y - era * 400;
  const monthIndex = (month + 9) % 12;
  const dayOfYear = Math.floor((153 * monthIndex + 2) / 5) + day - 1;
  const dayOfEra =
    yearOfEra * 365 + Math.floor(yearOfEra / 4) - Math.floor(yearOfEra / 100) + dayOfYear;
  return era * 146_097 + dayOfEra - 719_468;
}
