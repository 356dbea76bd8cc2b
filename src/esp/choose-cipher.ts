// The ESP cipher a command uses: --cipher native | node, else native when the addon is built.

import { NviError } from '../base/errors.js';
import { NodeEspCipher, type EspCipher } from './esp-cipher.js';
import { createEspCipher, NativeEspCipher } from './native-esp-cipher.js';

export function chooseCipher(name: string | undefined): EspCipher {
  if (name === undefined) return createEspCipher();
  if (name === 'node') return new NodeEspCipher();
  if (name === 'native') return new NativeEspCipher();
  throw new NviError('NVI_ERR_USAGE', `--cipher ${name}: expected native or node`);
}
