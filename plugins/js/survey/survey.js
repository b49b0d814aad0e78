/**
 * The command handler `survey` in JavaScript: one patient survey per visit, on the streams
 * `survey-<visit id>`. It is an exact port of the Rust handler `survey` (plugins/survey): the same
 * commands, the same events with their fields in the same order, the same state, and the same
 * rejection reasons byte for byte, so it can be deployed as a new version of `survey` and a
 * replay of the recorded commands finds no difference.
 *
 * - `PrepareSurvey {visit_id, patient_id}` → `SurveyPrepared {visit_id, patient_id, questions}`;
 *   rejected if the survey is prepared already (`survey for visit 1001 is already prepared`).
 * - `SubmitSurvey {score, comment?}` (score 1 to 5) → `SurveySubmitted {score, comment?}`;
 *   rejected before the survey is prepared and once it is submitted.
 */

import { Rejection, handler } from '@evhost/sdk';

/** The questions every survey asks. */
export const QUESTIONS = [
  'How well was your pain managed?',
  'How clearly was your care explained to you?',
  'How likely are you to recommend us?',
];

export default handler({
  name: 'survey',
  category: 'survey',
  description: 'Patient surveys after a visit: prepared, then submitted',
  // What the handler remembers of a survey: the visit, once prepared, and whether it was answered.
  initialState: { visit_id: null, submitted: false },
})
  .evolve('SurveyPrepared', (state, event) => {
    const { visit_id } = decodeEvent(event, SURVEY_PREPARED);
    return { ...state, visit_id };
  })
  .evolve('SurveySubmitted', (state, event) => {
    decodeEvent(event, SURVEY_SUBMITTED);
    return { ...state, submitted: true };
  })
  .decide('PrepareSurvey', (state, command) => {
    const { visit_id, patient_id } = decodeCommand(command, PREPARE_SURVEY);
    if (state.visit_id !== null) {
      throw new Rejection(`survey for visit ${state.visit_id} is already prepared`);
    }
    if (isBlank(visit_id)) throw new Rejection('visit_id is empty; expected a value');
    if (isBlank(patient_id)) throw new Rejection('patient_id is empty; expected a value');
    return [{ type: 'SurveyPrepared', data: { visit_id, patient_id, questions: [...QUESTIONS] } }];
  })
  .decide('SubmitSurvey', (state, command) => {
    const { score, comment } = decodeCommand(command, SUBMIT_SURVEY);
    if (state.visit_id === null) throw new Rejection('the survey is not prepared');
    if (state.submitted) throw new Rejection('the survey is already submitted');
    if (score < 1 || score > 5) throw new Rejection(`score is ${score}; expected 1 to 5`);
    // Like the Rust event, `comment` is left out when there is none.
    const data = comment === null ? { score } : { score, comment };
    return [{ type: 'SurveySubmitted', data }];
  });

/**
 * Whether `text` is empty once trimmed as Rust's `str::trim` does: by Unicode White_Space, which
 * (unlike JavaScript's `trim`) includes U+0085 and excludes U+FEFF.
 */
function isBlank(text) {
  return /^[\t\n\v\f\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]*$/.test(text);
}

// ---------------------------------------------------------------------------------------------
// Decoding with the Rust handler's error texts.
//
// The Rust handler decodes command data with serde_json, and a command whose data does not fit
// is rejected with serde_json's words: "SubmitSurvey data does not match: invalid value: integer
// `300`, expected u8 at line 1 column 12". A replay compares rejection reasons as text, so this
// port decodes the recorded JSON text the same way: field by field, with serde_json's messages
// and positions (line, and column in bytes after what was read).
// ---------------------------------------------------------------------------------------------

/** The fields of each command and event, in declaration order, with their Rust types. */
const PREPARE_SURVEY = {
  variant: 'PrepareSurvey',
  fields: { visit_id: 'string', patient_id: 'string' },
};
const SUBMIT_SURVEY = { variant: 'SubmitSurvey', fields: { score: 'u8', comment: 'string?' } };
const SURVEY_PREPARED = {
  variant: 'SurveyPrepared',
  fields: { visit_id: 'string', patient_id: 'string', questions: 'string[]' },
};
const SURVEY_SUBMITTED = { variant: 'SurveySubmitted', fields: { score: 'u8', comment: 'string?' } };

/** The command's fields, or the rejection the Rust handler gives for its data. */
function decodeCommand(command, shape) {
  try {
    return decodeStruct(command.dataJson, shape, 'SurveyCommand');
  } catch (error) {
    if (error instanceof SerdeError) throw new Rejection(`${command.type} data does not match: ${error.message}`);
    throw error;
  }
}

/** An event's fields, checked as the Rust handler checks them: a mismatch fails the stream's fold. */
function decodeEvent(event, shape) {
  return decodeStruct(event.dataJson, shape, 'SurveyEvent');
}

/** An error in serde_json's words, with its position. */
class SerdeError extends Error {}

/** Reads a struct variant of `enumName` from JSON text as serde's derived visitor does. */
function decodeStruct(text, { variant, fields }, enumName) {
  const reader = new JsonReader(text);
  const expected = `struct variant ${enumName}::${variant}`;
  const start = reader.skipWhitespace();
  if (start === '[') {
    // A derived adjacently tagged variant reads its content as a map only.
    reader.take();
    if (reader.skipWhitespace() === ']') reader.take();
    throw reader.error(`invalid type: sequence, expected ${expected}`);
  }
  if (start !== '{') throw reader.invalidType(expected);
  reader.take();
  const found = {};
  for (let first = true; ; first = false) {
    let next = reader.skipWhitespace();
    if (!first && next === ',') {
      reader.take();
      next = reader.skipWhitespace();
    }
    if (next === '}') break;
    const key = reader.readString();
    const known = Object.hasOwn(fields, key);
    if (known && Object.hasOwn(found, key)) {
      // serde_json places this error after the whitespace that follows the key.
      reader.skipWhitespace();
      throw reader.error(`duplicate field \`${key}\``);
    }
    reader.skipWhitespace();
    reader.take(); // the ':'
    if (known) found[key] = reader.readField(fields[key]);
    else reader.skipValue();
  }
  reader.skipWhitespace();
  reader.take(); // the '}'
  for (const [name, type] of Object.entries(fields)) {
    if (Object.hasOwn(found, name)) continue;
    if (type.endsWith('?')) found[name] = null;
    else throw reader.error(`missing field \`${name}\``);
  }
  return found;
}

/** A cursor over JSON text, by UTF-8 bytes as serde_json counts them. */
class JsonReader {
  constructor(text) {
    this.bytes = new TextEncoder().encode(text);
    this.index = 0;
  }

  peek() {
    return this.index < this.bytes.length ? String.fromCharCode(this.bytes[this.index]) : undefined;
  }

  take() {
    this.index += 1;
  }

  skipWhitespace() {
    while (' \n\t\r'.includes(this.peek() ?? 'x')) this.take();
    return this.peek();
  }

  /** An error at serde_json's position: the line, and the bytes read on it. */
  error(message) {
    let line = 1;
    let lineStart = 0;
    for (let index = 0; index < this.index; index += 1) {
      if (this.bytes[index] === 0x0a) {
        line += 1;
        lineStart = index + 1;
      }
    }
    return new SerdeError(`${message} at line ${line} column ${this.index - lineStart}`);
  }

  /** A string token: its value. */
  readString() {
    const start = this.index;
    this.take();
    while (this.peek() !== '"') {
      if (this.peek() === '\\') this.take();
      this.take();
    }
    this.take();
    return JSON.parse(new TextDecoder().decode(this.bytes.subarray(start, this.index)));
  }

  /** A number token: its text. */
  readNumberText() {
    const start = this.index;
    while (/[-+0-9.eE]/.test(this.peek() ?? '')) this.take();
    return new TextDecoder().decode(this.bytes.subarray(start, this.index));
  }

  /** Any value, read and dropped (a field the struct does not have). */
  skipValue() {
    const start = this.skipWhitespace();
    if (start === '"') return this.readString();
    if (start === '[' || start === '{') {
      let depth = 0;
      do {
        const next = this.skipWhitespace();
        if (next === '"') {
          this.readString();
          continue;
        }
        if (next === '[' || next === '{') depth += 1;
        if (next === ']' || next === '}') depth -= 1;
        this.take();
      } while (depth > 0);
      return undefined;
    }
    if (start === '-' || (start >= '0' && start <= '9')) return this.readNumberText();
    while (/[a-z]/.test(this.peek() ?? '')) this.take();
    return undefined;
  }

  /** A field's value, as the Rust type `type` (`string`, `string?`, `string[]` or `u8`). */
  readField(type) {
    const start = this.skipWhitespace();
    if (type === 'string[]') {
      // Only in the handler's own events, where any mismatch is a failure: its words do not matter.
      const from = this.index;
      this.skipValue();
      const list = JSON.parse(new TextDecoder().decode(this.bytes.subarray(from, this.index)));
      if (!Array.isArray(list) || !list.every((item) => typeof item === 'string')) {
        throw this.error('invalid type, expected a sequence of strings');
      }
      return list;
    }
    if (type === 'string?' && start === 'n') {
      this.index += 4;
      return null;
    }
    if (type === 'string' || type === 'string?') {
      if (start === '"') return this.readString();
      throw this.invalidType('a string');
    }
    // u8: serde_json reads any number, then the visitor judges it.
    if (start !== '-' && !(start >= '0' && start <= '9')) throw this.invalidType('u8');
    const number = this.readNumber();
    if (number.kind === 'float') throw this.error(`invalid type: floating point \`${formatFloat(number.value)}\`, expected u8`);
    if (number.value < 0n || number.value > 255n) throw this.error(`invalid value: integer \`${number.value}\`, expected u8`);
    return Number(number.value);
  }

  /**
   * A number token, parsed as serde_json parses it (without its `float_roundtrip` feature): a
   * `bigint` for an integer that fits u64 (or i64 when negative), else a float computed from a
   * u64 significand and a power of ten, which may differ from JavaScript's reading in the last
   * digit, and which serde_json prints that way.
   * @returns {{kind: 'integer', value: bigint} | {kind: 'float', value: number}}
   */
  readNumber() {
    const positive = this.peek() !== '-';
    if (!positive) this.take();
    let significand = 0n;
    let exponent = 0;
    let fraction = false;
    // Digits that no longer fit the u64 significand are dropped; before the point they count
    // as powers of ten.
    let overflowed = false;
    while (isDigit(this.peek())) {
      const digit = BigInt(this.bytes[this.index] - 0x30);
      this.take();
      if (overflowed || significand * 10n + digit > U64_MAX) {
        overflowed = true;
        exponent += 1;
      } else {
        significand = significand * 10n + digit;
      }
    }
    if (this.peek() === '.') {
      fraction = true;
      this.take();
      while (isDigit(this.peek())) {
        const digit = BigInt(this.bytes[this.index] - 0x30);
        this.take();
        if (overflowed || significand * 10n + digit > U64_MAX) {
          overflowed = true;
        } else {
          significand = significand * 10n + digit;
          exponent -= 1;
        }
      }
    }
    if (this.peek() === 'e' || this.peek() === 'E') {
      fraction = true;
      this.take();
      let positiveExponent = true;
      if (this.peek() === '+' || this.peek() === '-') {
        positiveExponent = this.peek() === '+';
        this.take();
      }
      let written = 0;
      while (isDigit(this.peek())) {
        written = written * 10 + (this.bytes[this.index] - 0x30);
        this.take();
        if (written > I32_MAX) {
          if (significand !== 0n && positiveExponent) throw this.error('number out of range');
          while (isDigit(this.peek())) this.take();
          return { kind: 'float', value: positive ? 0 : -0 };
        }
      }
      exponent = clampI32(positiveExponent ? exponent + written : exponent - written);
    }
    if (!fraction && !overflowed) {
      if (positive) return { kind: 'integer', value: significand };
      // -0 and integers below i64's range are floats.
      if (significand !== 0n && significand <= 2n ** 63n) return { kind: 'integer', value: -significand };
      return { kind: 'float', value: -Number(significand) };
    }
    const value = floatFromParts(significand, exponent);
    if (value === undefined) throw this.error('number out of range');
    return { kind: 'float', value: positive ? value : -value };
  }

  /** serde_json's "invalid type" for the value at the cursor, read as it reads it. */
  invalidType(expected) {
    const start = this.peek();
    let unexpected;
    if (start === 'n' || start === 't' || start === 'f') {
      const word = start === 'n' ? 'null' : start === 't' ? 'true' : 'false';
      this.index += word.length;
      unexpected = start === 'n' ? 'null' : `boolean \`${word}\``;
    } else if (start === '-' || (start >= '0' && start <= '9')) {
      const number = this.readNumber();
      unexpected = number.kind === 'float' ? `floating point \`${formatFloat(number.value)}\`` : `integer \`${number.value}\``;
    } else if (start === '"') {
      unexpected = `string ${rustDebugString(this.readString())}`;
    } else {
      unexpected = start === '[' ? 'sequence' : 'map';
    }
    return this.error(`invalid type: ${unexpected}, expected ${expected}`);
  }
}

const U64_MAX = 2n ** 64n - 1n;
const I32_MAX = 2 ** 31 - 1;

function isDigit(char) {
  return char !== undefined && char >= '0' && char <= '9';
}

function clampI32(value) {
  return Math.max(-(2 ** 31), Math.min(I32_MAX, value));
}

/** `significand × 10^exponent` as serde_json computes it; undefined when out of range. */
function floatFromParts(significand, exponent) {
  let value = Number(significand);
  let remaining = exponent;
  for (;;) {
    const power = Math.abs(remaining);
    if (power <= 308) {
      if (remaining >= 0) {
        value *= Number(`1e${power}`);
        if (!Number.isFinite(value)) return undefined;
      } else {
        value /= Number(`1e${power}`);
      }
      return value;
    }
    if (value === 0) return value;
    if (remaining >= 0) return undefined;
    value /= 1e308;
    remaining += 308;
  }
}

/**
 * A float as serde_json writes it in an error: the shortest digits that read back as the same
 * number, in plain notation with a fraction (`5.0`, `0.00001`) for decimal exponents from -5 to
 * 15, else in scientific notation (`1e-6`, `1.5e+300`).
 */
function formatFloat(value) {
  if (value === 0) return Object.is(value, -0) ? '-0.0' : '0.0';
  const [mantissa, exponentText] = value.toExponential().split('e');
  const exponent = Number(exponentText);
  if (exponent < -5 || exponent > 15) return `${mantissa}e${exponent < 0 ? '-' : '+'}${Math.abs(exponent)}`;
  const negative = mantissa.startsWith('-');
  const digits = mantissa.replace('-', '').replace('.', '');
  let plain;
  if (exponent < 0) plain = `0.${'0'.repeat(-exponent - 1)}${digits}`;
  else if (digits.length <= exponent + 1) plain = `${digits}${'0'.repeat(exponent + 1 - digits.length)}.0`;
  else plain = `${digits.slice(0, exponent + 1)}.${digits.slice(exponent + 1)}`;
  return negative ? `-${plain}` : plain;
}

/**
 * A string as Rust's `{:?}` writes it: quoted, with `"` and `\` escaped, the usual escapes for
 * tab, newline, carriage return and NUL, and `\u{..}` for what Rust does not print as it is.
 */
function rustDebugString(text) {
  let out = '"';
  for (const char of text) {
    const code = char.codePointAt(0);
    if (char === '"' || char === '\\') out += `\\${char}`;
    else if (char === '\t') out += '\\t';
    else if (char === '\n') out += '\\n';
    else if (char === '\r') out += '\\r';
    else if (char === '\0') out += '\\0';
    else if (isEscapedByRustDebug(code)) out += `\\u{${code.toString(16)}}`;
    else out += char;
  }
  return `${out}"`;
}

/**
 * Code points that Rust's `{:?}` escapes: controls, format characters, separators other than
 * the space, private use, and combining marks. Rust decides with its own Unicode tables; the
 * JavaScript engine of a component has no Unicode property data (`\p{..}` does not compile), so
 * this lists the ranges that occur in practice. Unassigned code points are printed as they are.
 */
const ESCAPED_BY_RUST_DEBUG = [
  [0x00, 0x1f], [0x7f, 0xa0], [0xad, 0xad], [0x300, 0x36f], [0x483, 0x489], [0x591, 0x5bd],
  [0x600, 0x605], [0x61c, 0x61c], [0x6dd, 0x6dd], [0x70f, 0x70f], [0x1680, 0x1680],
  [0x180e, 0x180e], [0x1ab0, 0x1aff], [0x1dc0, 0x1dff], [0x2000, 0x200f], [0x2028, 0x202f],
  [0x205f, 0x2064], [0x2066, 0x206f], [0x20d0, 0x20f0], [0x3000, 0x3000], [0x302a, 0x302f],
  [0x3099, 0x309a], [0xd800, 0xf8ff], [0xfe00, 0xfe0f], [0xfe20, 0xfe2f], [0xfeff, 0xfeff],
  [0xfff9, 0xfffb], [0x1f3fb, 0x1f3ff], [0xe0001, 0xe0001], [0xe0020, 0xe007f],
  [0xe0100, 0xe01ef], [0xf0000, 0x10ffff],
];

function isEscapedByRustDebug(code) {
  return ESCAPED_BY_RUST_DEBUG.some(([first, last]) => code >= first && code <= last);
}
