// The dashboard's only way to the server: the admin API with the token kept
// in session storage, and the pure rules the forms check before sending
// (the same rules the API applies, so a refusal is rare and then shown as
// the API words it).

const TOKEN_KEY = 'slotproxy.admin-token';

export const token = {
  get: () => sessionStorage.getItem(TOKEN_KEY),
  set: (t) => sessionStorage.setItem(TOKEN_KEY, t),
  clear: () => sessionStorage.removeItem(TOKEN_KEY),
};

/** The API refused the token (401): ask for it again. */
export class AuthError extends Error {}

/** Any other refusal, with the API's own `error` text. */
export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

/** Fill `{name}` segments of an API path template, each encoded. */
export function path(template, ...args) {
  let i = 0;
  return template.replace(/\{[^}]+\}/g, () => encodeURIComponent(args[i++] ?? ''));
}

/** Call the admin API; resolves to the JSON answer. */
export async function call(method, url, body) {
  const headers = { Accept: 'application/json' };
  const t = token.get();
  if (t) headers.Authorization = `Bearer ${t}`;
  const init = { method, headers, cache: 'no-store' };
  if (body !== undefined) {
    headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let resp;
  try {
    resp = await fetch(url, init);
  } catch (e) {
    throw new ApiError(0, `the admin API did not answer (${e.message})`);
  }
  const text = await resp.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null;
  }
  if (resp.status === 401) {
    throw new AuthError(data?.error ?? 'missing or wrong token');
  }
  if (!resp.ok) {
    throw new ApiError(resp.status, data?.error ?? `${resp.status} ${resp.statusText}`);
  }
  return data;
}

export const PATHS = {
  sites: '/api/v1/sites',
  site: '/api/v1/sites/{site}',
  deployment: '/api/v1/sites/{site}/slots/{slot}/deployment',
  traffic: '/api/v1/sites/{site}/traffic-routing',
  swap: '/api/v1/sites/{site}/slots/{slot}/swap',
  swapPreview: '/api/v1/sites/{site}/slots/{slot}/swap-preview',
  operation: '/api/v1/operations/{id}',
  activity: '/api/v1/sites/{site}/activity',
  live: '/api/v1/sites/{site}/live',
  listeners: '/api/v1/listeners',
  shadow: '/api/v1/sites/{site}/slots/{slot}/shadow',
};

/**
 * Check the traffic editor's values as the API will: each given value a
 * number in 0–100 (an empty field is "no rule", and 0 is a rule), the sum
 * at most 100. `fields` is [[slot, text]]; answers {distribution, errors,
 * invalid (slot names), production}.
 */
export function checkTraffic(fields) {
  const distribution = {};
  const errors = [];
  const invalid = [];
  let sum = 0;
  for (const [slot, raw] of fields) {
    const text = String(raw).trim();
    if (text === '') continue;
    const n = Number(text);
    if (!Number.isFinite(n)) {
      errors.push(`${slot}: ${JSON.stringify(text)} is not a number`);
      invalid.push(slot);
    } else if (n < 0 || n > 100) {
      errors.push(`${slot}: ${n} is out of range 0-100`);
      invalid.push(slot);
    } else {
      distribution[slot] = n;
      sum += n;
    }
  }
  if (errors.length === 0 && sum > 100 + 1e-9) {
    errors.push(`the rules sum to ${+sum.toFixed(6)}, over 100`);
    invalid.push(...Object.keys(distribution));
  }
  return { distribution, errors, invalid, production: Math.max(0, 100 - sum) };
}

/**
 * A link to `host` through the proxy: its first plain listener's port (or
 * the first TLS one's, with https), left out when it is the scheme's own.
 */
export function hostUrl(host, listeners) {
  const pick = (list, scheme, standard) => {
    const addr = list?.[0];
    if (!addr) return null;
    const port = addr.slice(addr.lastIndexOf(':') + 1);
    return `${scheme}://${host}${port === standard ? '' : `:${port}`}/`;
  };
  return pick(listeners?.http, 'http', '80') ?? pick(listeners?.https, 'https', '443') ?? `http://${host}/`;
}
