/** Reads a QR code out of a PNG, as a phone camera would (jsqr + pngjs). */
import * as jsqrModule from 'jsqr';
import { PNG } from 'pngjs';

// jsqr is a webpack UMD bundle whose module.exports is { default: jsQR }; depending on the loader's
// CommonJS interop the function is the namespace's default or the default's default.
export type JsQr = (data: Uint8ClampedArray, width: number, height: number) => { data: string } | null;
const jsqrNs = jsqrModule as unknown as { default: JsQr | { default: JsQr } };
export const jsQR: JsQr = typeof jsqrNs.default === 'function' ? jsqrNs.default : jsqrNs.default.default;

export function decodeQrPng(png: Buffer): string | undefined {
  const img = PNG.sync.read(png);
  return jsQR(new Uint8ClampedArray(img.data), img.width, img.height)?.data;
}
