// Pure parts of the CLI: argument parsing and formatting.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { InvalidArgumentError } from 'commander';
import {
  ago,
  bytes,
  collectKeyValue,
  execCommand,
  mib,
  parseCopy,
  parseCopyEnd,
  parseDuration,
  parsePositiveInt,
  parseSizeMb,
  table,
} from '../src/index.js';

test('parsePositiveInt', () => {
  assert.equal(parsePositiveInt('1'), 1);
  assert.equal(parsePositiveInt('16'), 16);
  for (const bad of ['0', '-1', '1.5', 'abc', '', ' 2', '99999999999999999999']) {
    assert.throws(() => parsePositiveInt(bad), InvalidArgumentError, bad);
  }
});

test('parseDuration gives seconds', () => {
  assert.equal(parseDuration('300'), 300);
  assert.equal(parseDuration('90s'), 90);
  assert.equal(parseDuration('5m'), 300);
  assert.equal(parseDuration('1h'), 3600);
  assert.equal(parseDuration('0'), 0);
  for (const bad of ['', '5d', '-1', '1.5m', 'm', 'soon']) {
    assert.throws(() => parseDuration(bad), InvalidArgumentError, bad);
  }
});

test('parseSizeMb gives MiB', () => {
  assert.equal(parseSizeMb('512'), 512);
  assert.equal(parseSizeMb('512M'), 512);
  assert.equal(parseSizeMb('512MiB'), 512);
  assert.equal(parseSizeMb('2G'), 2048);
  assert.equal(parseSizeMb('2gib'), 2048);
  for (const bad of ['0', '', '1T', '-5', '1.5G', 'lots']) {
    assert.throws(() => parseSizeMb(bad), InvalidArgumentError, bad);
  }
});

test('collectKeyValue accumulates KEY=VALUE (values may contain =)', () => {
  const a = collectKeyValue('A=1');
  const b = collectKeyValue('B=x=y', a);
  assert.deepEqual(b, { A: '1', B: 'x=y' });
  assert.deepEqual(collectKeyValue('EMPTY='), { EMPTY: '' });
  assert.throws(() => collectKeyValue('novalue'), InvalidArgumentError);
  assert.throws(() => collectKeyValue('=v'), InvalidArgumentError);
});

test('parseCopyEnd and parseCopy tell capsule paths from local ones', () => {
  const id = 'cl-0123456789abcdefghijklmno';
  assert.deepEqual(parseCopyEnd(`${id}:/tmp/a b`), { kind: 'capsule', capsuleId: id, path: '/tmp/a b' });
  assert.deepEqual(parseCopyEnd('./file:with:colons'), { kind: 'local', path: './file:with:colons' });
  assert.deepEqual(parseCopyEnd('-'), { kind: 'local', path: '-' });
  assert.throws(() => parseCopyEnd(`${id}:relative`), /must be absolute/);

  assert.deepEqual(parseCopy('a.txt', `${id}:/root/`), {
    direction: 'upload',
    local: 'a.txt',
    capsuleId: id,
    remote: '/root/',
  });
  assert.deepEqual(parseCopy(`${id}:/etc/hostname`, '.'), {
    direction: 'download',
    local: '.',
    capsuleId: id,
    remote: '/etc/hostname',
  });
  assert.throws(() => parseCopy('a', 'b'), /one side of cp must be in a capsule/);
  assert.throws(() => parseCopy(`${id}:/a`, `${id}:/b`), /between two capsules/);
});

test('execCommand: one word is a shell line, several are argv', () => {
  assert.deepEqual(execCommand(['echo hi | wc -c']), { cmd: 'echo hi | wc -c' });
  assert.deepEqual(execCommand(['ls', '-la', '/']), { cmd: 'ls', args: ['-la', '/'] });
  assert.throws(() => execCommand([]), /no command given/);
});

test('table aligns columns; sizes and ages read well', () => {
  assert.equal(
    table(
      ['ID', 'STATUS'],
      [
        ['cl-a', 'running'],
        ['cl-bbbbb', 'paused'],
      ],
    ),
    'ID        STATUS\ncl-a      running\ncl-bbbbb  paused\n',
  );
  assert.equal(mib(512), '512 MiB');
  assert.equal(mib(2048), '2 GiB');
  assert.equal(bytes(512), '512 B');
  assert.equal(bytes(1536), '1.5 KiB');
  const now = new Date('2026-01-01T12:00:00Z');
  assert.equal(ago(new Date('2026-01-01T11:59:30Z'), now), '30s ago');
  assert.equal(ago(new Date('2026-01-01T11:00:00Z'), now), '1h ago');
  assert.equal(ago(new Date('2025-12-30T12:00:00Z'), now), '2d ago');
});
