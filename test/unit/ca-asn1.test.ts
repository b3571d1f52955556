import { describe, expect, it } from 'vitest';
import {
  Asn1Error,
  bitString,
  boolean,
  children,
  encodeLength,
  explicit,
  ia5String,
  implicit,
  integer,
  integerFromBuffer,
  namedBits,
  octetString,
  oid,
  parseDer,
  pemBlocks,
  pemEncode,
  printableString,
  readOid,
  readTlv,
  sequence,
  set,
  time,
  utf8String,
  value,
} from '../../src/ca/asn1.js';
import { ipBytes } from '../../src/ca/certificate.js';

const hex = (b: Buffer) => b.toString('hex');

describe('DER encoding', () => {
  it('encodes lengths minimally', () => {
    expect(hex(encodeLength(0))).toBe('00');
    expect(hex(encodeLength(127))).toBe('7f');
    expect(hex(encodeLength(128))).toBe('8180');
    expect(hex(encodeLength(255))).toBe('81ff');
    expect(hex(encodeLength(256))).toBe('820100');
    expect(hex(encodeLength(65536))).toBe('83010000');
    expect(hex(sequence(Buffer.alloc(300)).subarray(0, 4))).toBe('3082012c');
  });

  it('encodes positive INTEGERs minimally', () => {
    expect(hex(integerFromBuffer(Buffer.from([0, 0, 1])))).toBe('020101');
    expect(hex(integerFromBuffer(Buffer.from([0x80])))).toBe('02020080');
    expect(hex(integerFromBuffer(Buffer.from([0, 0x7f])))).toBe('02017f');
    expect(hex(integerFromBuffer(Buffer.alloc(0)))).toBe('020100');
    expect(hex(integer(0))).toBe('020100');
    expect(hex(integer(2))).toBe('020102');
    expect(hex(integer(65537))).toBe('0203010001');
  });

  it('encodes OIDs', () => {
    expect(hex(oid('2.5.4.3'))).toBe('0603550403');
    expect(hex(oid('1.2.840.10045.4.3.2'))).toBe('06082a8648ce3d040302');
    expect(hex(oid('1.3.6.1.5.5.7.3.2'))).toBe('06082b06010505070302');
    expect(() => oid('1')).toThrow(Asn1Error);
    expect(() => oid('1.40')).toThrow(Asn1Error);
    expect(() => oid('1.2.x')).toThrow(Asn1Error);
  });

  it('round-trips OIDs through the reader', () => {
    for (const o of ['2.5.29.17', '1.2.840.113549.1.1.11', '2.999.1', '1.3.6.1.4.1.99999.1.2.3']) {
      expect(readOid(parseDer(oid(o)))).toBe(o);
    }
  });

  it('encodes strings, BOOLEAN, BIT STRING and tags', () => {
    expect(hex(utf8String('é'))).toBe('0c02c3a9');
    expect(hex(printableString('Ab 1'))).toBe('130441622031');
    expect(() => printableString('a@b')).toThrow(Asn1Error);
    expect(hex(ia5String('a@b'))).toBe('1603614062');
    expect(() => ia5String('é')).toThrow(Asn1Error);
    expect(hex(octetString(Buffer.from([1, 2])))).toBe('04020102');
    expect(hex(boolean(true))).toBe('0101ff');
    expect(hex(boolean(false))).toBe('010100');
    expect(hex(bitString(Buffer.from([0xab])))).toBe('030200ab');
    expect(hex(set(integer(1)))).toBe('3103020101');
    expect(hex(explicit(0, integer(2)))).toBe('a003020102');
    expect(hex(implicit(6, Buffer.from('x')))).toBe('860178');
    expect(hex(implicit(1, Buffer.alloc(0), true))).toBe('a100');
  });

  it('encodes named bit lists without trailing zero bits', () => {
    expect(hex(namedBits([0]))).toBe('03020780'); // digitalSignature
    expect(hex(namedBits([5, 6]))).toBe('03020106'); // keyCertSign, cRLSign
    expect(hex(namedBits([0, 5, 6]))).toBe('03020186');
    expect(hex(namedBits([0, 2]))).toBe('030205a0'); // digitalSignature, keyEncipherment
    expect(hex(namedBits([8]))).toBe('0303070080');
  });

  it('uses UTCTime through 2049 and GeneralizedTime from 2050', () => {
    expect(time(new Date('2049-12-31T23:59:59.999Z')).toString('latin1', 2)).toBe('491231235959Z');
    expect(time(new Date('2049-12-31T23:59:59Z'))[0]).toBe(0x17);
    expect(time(new Date('2050-01-01T00:00:00Z'))[0]).toBe(0x18);
    expect(time(new Date('2050-01-01T00:00:00Z')).toString('latin1', 2)).toBe('20500101000000Z');
    expect(time(new Date('2000-02-03T04:05:06Z')).toString('latin1', 2)).toBe('000203040506Z');
    expect(() => time(new Date('1949-12-31T00:00:00Z'))).toThrow(Asn1Error);
    expect(() => time(new Date(NaN))).toThrow(Asn1Error);
  });
});

describe('DER reader', () => {
  it('reads nested TLVs with offsets', () => {
    const der = sequence(integer(5), octetString(Buffer.from('hi')));
    const top = parseDer(der);
    expect(top.tag).toBe(0x30);
    const [a, b] = children(top);
    expect(a!.start).toBe(2);
    expect(value(a!)).toEqual(Buffer.from([5]));
    expect(value(b!).toString()).toBe('hi');
    expect(b!.end).toBe(der.length);
  });

  it('reads long-form lengths', () => {
    const der = octetString(Buffer.alloc(1000, 7));
    const t = parseDer(der);
    expect(t.valueStart).toBe(4);
    expect(value(t).length).toBe(1000);
  });

  it('rejects indefinite lengths', () => {
    expect(() => parseDer(Buffer.from('30800201010000', 'hex'))).toThrow(/indefinite/);
  });

  it('rejects non-minimal lengths', () => {
    expect(() => parseDer(Buffer.from('04810100', 'hex'))).toThrow(/non-minimal/);
    expect(() => parseDer(Buffer.from('0482000100', 'hex'))).toThrow(/non-minimal/);
  });

  it('rejects truncation and trailing bytes', () => {
    expect(() => parseDer(Buffer.from('0403aabb', 'hex'))).toThrow(/truncated/);
    expect(() => parseDer(Buffer.from('04', 'hex'))).toThrow(/truncated/);
    expect(() => parseDer(Buffer.alloc(0))).toThrow(/truncated/);
    expect(() => parseDer(Buffer.from('048201', 'hex'))).toThrow(/truncated/);
    expect(() => parseDer(Buffer.from('0401aabb', 'hex'))).toThrow(/trailing/);
    // A child overrunning its parent.
    expect(() => children(parseDer(Buffer.from('30030405aa', 'hex')))).toThrow(Asn1Error);
  });

  it('rejects multi-octet tags and oversized lengths', () => {
    expect(() => readTlv(Buffer.from('1f0100', 'hex'))).toThrow(Asn1Error);
    expect(() => readTlv(Buffer.from('0485010000000000', 'hex'))).toThrow(Asn1Error);
  });

  it('rejects non-minimal OID arcs', () => {
    expect(() => readOid(parseDer(Buffer.from('0603558003', 'hex')))).toThrow(/non-minimal/);
    expect(() => readOid(parseDer(Buffer.from('060255ff', 'hex')))).toThrow(/truncated/);
  });
});

describe('PEM and IP helpers', () => {
  it('round-trips PEM with 64-character lines', () => {
    const der = Buffer.alloc(100, 0xab);
    const pem = pemEncode('CERTIFICATE', der);
    expect(pem.split('\n')[1]).toHaveLength(64);
    const blocks = pemBlocks('junk before\n' + pem + 'junk after');
    expect(blocks).toHaveLength(1);
    expect(blocks[0]!.label).toBe('CERTIFICATE');
    expect(blocks[0]!.der).toEqual(der);
  });

  it('rejects invalid PEM bodies', () => {
    expect(() => pemBlocks('-----BEGIN X-----\n!!!!\n-----END X-----\n')).toThrow(Asn1Error);
    expect(() => pemBlocks('-----BEGIN X-----\nAAAA\n-----END Y-----\n')).toThrow(Asn1Error);
    expect(() => pemBlocks('-----BEGIN X-----\nAAAAA\n-----END X-----\n')).toThrow(Asn1Error);
  });

  it('converts IP addresses to octets', () => {
    expect(hex(ipBytes('127.0.0.1'))).toBe('7f000001');
    expect(hex(ipBytes('::1'))).toBe('00000000000000000000000000000001');
    expect(hex(ipBytes('fe80::1:2'))).toBe('fe800000000000000000000000010002');
    expect(hex(ipBytes('2001:db8::'))).toBe('20010db8000000000000000000000000');
    expect(hex(ipBytes('::ffff:10.1.2.3'))).toBe('00000000000000000000ffff0a010203');
    expect(hex(ipBytes('1:2:3:4:5:6:7:8'))).toBe('00010002000300040005000600070008');
    expect(() => ipBytes('localhost')).toThrow(Asn1Error);
    expect(() => ipBytes('1.2.3.256')).toThrow(Asn1Error);
  });
});
