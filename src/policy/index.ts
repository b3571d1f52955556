export * from './topics.js';
export * from './lifecycle.js';
export * from './attempt-limiter.js';
export * from './roles.js';
export * from './rate-limiter.js';
