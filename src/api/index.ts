export { buildApi, type ApiDeps } from './app.js';
export { API_ERROR_CODES } from './errors.js';
