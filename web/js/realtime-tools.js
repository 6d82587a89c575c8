// The realtime page's tool demo: two function tools the page declares in `session.update` and runs itself when
// the model calls them (`get_time`, `calculate`). `calculate` parses arithmetic with a small recursive-descent
// parser: the model's text is never evaluated as code.

/** @typedef {{ type: "function", name: string, description: string, parameters: { [k: string]: unknown } }} FunctionTool */

/** The tools as `session.update` declares them. */
export const TOOLS = /** @type {FunctionTool[]} */ ([
  {
    type: "function",
    name: "get_time",
    description: "The current date and time, in the user's time zone unless another IANA time zone is given.",
    parameters: {
      type: "object",
      properties: {
        timezone: { type: "string", description: "An IANA time zone such as Asia/Shanghai (optional)" },
      },
      additionalProperties: false,
    },
  },
  {
    type: "function",
    name: "calculate",
    description: "Evaluate an arithmetic expression with + - * / % ^ and parentheses, e.g. (12.5 + 3) * 4.",
    parameters: {
      type: "object",
      properties: { expression: { type: "string", description: "The expression" } },
      required: ["expression"],
      additionalProperties: false,
    },
  },
]);

/**
 * Run a tool call and return its output as JSON text (errors become `{"error": ...}`, never exceptions).
 * @param {string} name
 * @param {string} args the call's arguments (JSON text)
 * @param {Date} [now]
 * @returns {string}
 */
export function runTool(name, args, now = new Date()) {
  /** @type {unknown} */
  let parsed;
  try {
    parsed = args.trim() ? JSON.parse(args) : {};
  } catch {
    return JSON.stringify({ error: `the arguments are not JSON: ${args.slice(0, 200)}` });
  }
  const params = /** @type {{ [k: string]: unknown }} */ (parsed && typeof parsed === "object" ? parsed : {});
  try {
    if (name === "get_time") return JSON.stringify(getTime(params.timezone, now));
    if (name === "calculate") {
      if (typeof params.expression !== "string") return JSON.stringify({ error: "expression must be a string" });
      return JSON.stringify({ expression: params.expression, result: calculate(params.expression) });
    }
    return JSON.stringify({ error: `unknown tool ${name}` });
  } catch (exc) {
    return JSON.stringify({ error: exc instanceof Error ? exc.message : String(exc) });
  }
}

/**
 * @param {unknown} timezone
 * @param {Date} now
 */
function getTime(timezone, now) {
  const zone = typeof timezone === "string" && timezone ? timezone : Intl.DateTimeFormat().resolvedOptions().timeZone;
  const local = new Intl.DateTimeFormat("en-GB", {
    timeZone: zone, // throws RangeError on an unknown zone
    dateStyle: "full",
    timeStyle: "long",
  }).format(now);
  return { timezone: zone, local, iso: now.toISOString() };
}

/**
 * Evaluate an arithmetic expression: numbers, + - * / % ^ (power, right-associative), unary minus, parentheses.
 * @param {string} text
 * @returns {number}
 */
export function calculate(text) {
  const tokens = text.match(/\d+(?:\.\d*)?(?:e[+-]?\d+)?|\.\d+|\*\*|[-+*/%^()×÷]|\S/gi) ?? [];
  let at = 0;
  const peek = () => tokens[at];
  const next = () => tokens[at++];
  /** @returns {number} */
  const expr = () => {
    let v = term();
    while (peek() === "+" || peek() === "-") v = next() === "+" ? v + term() : v - term();
    return v;
  };
  /** @returns {number} */
  const term = () => {
    let v = unary();
    for (;;) {
      const op = peek();
      if (op !== "*" && op !== "×" && op !== "/" && op !== "÷" && op !== "%") return v;
      next();
      const rhs = unary();
      if (op === "*" || op === "×") v *= rhs;
      else if (op === "%") v %= rhs;
      else v /= rhs;
    }
  };
  /** @returns {number} */
  const unary = () => {
    const sign = peek();
    if (sign !== "-" && sign !== "+") return power();
    next();
    return sign === "-" ? -unary() : unary();
  };
  /** @returns {number} */
  const power = () => {
    const base = atom();
    if (peek() !== "^" && peek() !== "**") return base;
    next();
    return base ** unary();
  };
  /** @returns {number} */
  const atom = () => {
    const t = next();
    if (t === undefined) throw new Error("the expression ends too early");
    if (t === "(") {
      const v = expr();
      if (next() !== ")") throw new Error("a parenthesis is not closed");
      return v;
    }
    const n = Number(t);
    if (Number.isNaN(n)) throw new Error(`unexpected ${JSON.stringify(t)}`);
    return n;
  };
  const value = expr();
  if (at < tokens.length) throw new Error(`unexpected ${JSON.stringify(tokens[at])}`);
  if (!Number.isFinite(value)) throw new Error("the result is not a finite number");
  return value;
}
