// api.js: the REST calls the client needs (PROTOCOL.md §7): signup, login,
// me, uploads. Errors become ApiError with the server's sentence.

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

export async function api(method, path, { token, json, body, headers } = {}) {
  const h = { ...(headers || {}) };
  if (token) h.Authorization = 'Bearer ' + token;
  if (json !== undefined) {
    h['Content-Type'] = 'application/json';
    body = JSON.stringify(json);
  }
  let res;
  try {
    res = await fetch(path, { method, headers: h, body });
  } catch {
    throw new ApiError(0, 'unavailable', 'The server cannot be reached. Try again in a moment.');
  }
  let data = null;
  try { data = await res.json(); } catch { /* not JSON */ }
  if (!res.ok) {
    const retry = res.headers.get('Retry-After');
    let msg = (data && data.message) || `The server answered ${res.status}.`;
    if (retry) msg += ` Try again in ${retry} s.`;
    throw new ApiError(res.status, (data && data.error) || 'error', msg);
  }
  return data;
}

export const signup = (name, password) => api('POST', '/api/signup', { json: { name, password } });
export const login = (name, password) => api('POST', '/api/login', { json: { name, password } });
export const me = (token) => api('GET', '/api/me', { token });
export const upload = (token, file) =>
  api('POST', '/api/uploads', { token, body: file, headers: { 'Content-Type': file.type || 'application/octet-stream' } });
