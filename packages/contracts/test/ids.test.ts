import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  formatId,
  parseId,
  tryParseId,
  uuidToBase36,
  base36ToUuid,
  PLATFORM_UUID,
  newId,
  InvalidIdError,
} from '../src/ids.js';
import { isSafeName } from '../src/names.js';

test('wire ids round-trip and are 25 base36 characters after the prefix', () => {
  for (let i = 0; i < 200; i++) {
    const { uuid, id } = newId('capsule');
    assert.match(id, /^cl-[0-9a-z]{25}$/);
    assert.equal(parseId('capsule', id), uuid);
  }
  assert.equal(uuidToBase36(PLATFORM_UUID), '0'.repeat(25));
  assert.equal(base36ToUuid('0'.repeat(25)), PLATFORM_UUID);
  const max = 'ffffffff-ffff-ffff-ffff-ffffffffffff';
  assert.equal(base36ToUuid(uuidToBase36(max)), max);
});

test('malformed wire ids are rejected, never thrown past the parser', () => {
  const good = formatId('team', '0190a6e4-1111-4222-8333-444455556666');
  for (const bad of [
    '',
    'team-',
    'cl-' + good.slice(5),
    good.toUpperCase(),
    good + 'a',
    good.slice(0, -1),
    'team-' + 'z'.repeat(25),
    'team-../../etc/passwd',
    42,
    null,
  ]) {
    assert.equal(tryParseId('team', bad), null, String(bad));
  }
  assert.throws(() => parseId('team', 'team-xyz'), InvalidIdError);
});

test('safe names allow template-like names and refuse traversal', () => {
  for (const ok of ['minimal', 'python-3.12', 'a', 'My_Template.v2']) assert.ok(isSafeName(ok), ok);
  for (const bad of ['', '../etc', 'a/b', '.hidden', 'a..b', 'x'.repeat(65), 'a b', '-x'])
    assert.ok(!isSafeName(bad), bad);
});
