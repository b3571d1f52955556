/** aedes-persistence-redis ships no types; what provisiond uses of it. */
declare module 'aedes-persistence-redis' {
  interface AedesPersistenceRedisOptions {
    host?: string;
    port?: number;
    username?: string;
    password?: string;
    db?: number;
    tls?: object;
    maxSessionDelivery?: number;
  }
  export default function aedesPersistenceRedis(options?: AedesPersistenceRedisOptions): unknown;
}
