// Errors with stable codes. A config error names the YAML path it is about.

export class NviError extends Error {
  constructor(readonly code: string, message: string) {
    super(message);
    this.name = 'NviError';
  }
}

export class ConfigError extends NviError {
  constructor(readonly path: string, message: string) {
    super('NVI_ERR_CONFIG', `${path}: ${message}`);
    this.name = 'ConfigError';
  }
}
