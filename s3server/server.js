'use strict';
/*
 * The stack's S3 server: s3rver (pinned in package-lock.json) over a folder, with a store that
 * answers a write only once it is on disk. s3rver 3.7.1 acknowledges a PUT when the request
 * body has been read, before its file is written, and never fsyncs; here each object is
 * written to a temporary file, fsynced, and renamed into place with its folder fsynced, so a
 * kill -9 or a power cut after the answer cannot lose it, and one during the write leaves no
 * half object behind.
 *
 * Usage: node server.js --directory DIR --address HOST --port PORT --bucket NAME
 * The access key pair comes from S3_ACCESS_KEY and S3_SECRET_KEY (not argv: `ps` shows argv).
 */

const crypto = require('crypto');
const fs = require('fs');
const fsp = fs.promises;
const path = require('path');
const { Transform } = require('stream');
const { pipeline } = require('stream/promises');

const S3rver = require('s3rver');
const FilesystemStore = require('s3rver/lib/stores/filesystem');
const { DUMMY_ACCOUNT } = require('s3rver/lib/models/account');
const S3Object = require('s3rver/lib/models/object');

const HEALTH_PATH = '/_readmit/health';

async function syncPath(target) {
  const handle = await fsp.open(target, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/** Write `content` (a Buffer or a stream) to `file`; returns [size, md5 hex]. */
async function writeContent(file, content, durable) {
  const md5 = crypto.createHash('md5');
  let size = 0;
  const source = Buffer.isBuffer(content) ? [content] : content;
  const count = new Transform({
    transform(chunk, encoding, callback) {
      md5.update(chunk);
      size += chunk.length;
      callback(null, chunk);
    },
  });
  await pipeline(source, count, fs.createWriteStream(file));
  if (durable) await syncPath(file);
  return [size, md5.digest('hex')];
}

function temporaryName(target) {
  // Never ends in "._S3rver_object", so listings skip it.
  return path.join(path.dirname(target), `.${crypto.randomBytes(8).toString('hex')}.partial`);
}

/** Write a small file atomically and durably (temporary file, fsync, rename). */
async function writeSmallFile(target, text) {
  const temporary = temporaryName(target);
  await writeContent(temporary, Buffer.from(text), true);
  await fsp.rename(temporary, target);
}

class DurableStore extends FilesystemStore {
  /** fsync each folder from `folder` up to the store's root, so new entries survive a crash. */
  async syncFolders(folder) {
    const root = path.resolve(this.rootDirectory);
    let current = path.resolve(folder);
    for (;;) {
      await syncPath(current);
      if (current === root || !current.startsWith(root)) return;
      current = path.dirname(current);
    }
  }

  async putMetadata(bucket, key, metadata, md5) {
    const metadataPath = this.getResourcePath(bucket, key, 'metadata.json');
    const md5Path = this.getResourcePath(bucket, key, 'object.md5');
    const json = {};
    for (const [name, value] of Object.entries(metadata || {})) {
      if (S3Object.ALLOWED_METADATA.includes(name) || name.startsWith('x-amz-meta-')) {
        json[name] = value;
      }
    }
    if (md5) await writeSmallFile(md5Path, md5);
    await writeSmallFile(metadataPath, JSON.stringify(json, null, 2));
  }

  async putObject(object) {
    const objectPath = this.getResourcePath(object.bucket, object.key, 'object');
    const folder = path.dirname(objectPath);
    await fsp.mkdir(folder, { recursive: true });
    const temporary = temporaryName(objectPath);
    try {
      const [size, md5] = await writeContent(temporary, object.content, true);
      await this.putMetadata(object.bucket, object.key, object.metadata, md5);
      await fsp.rename(temporary, objectPath);
      await this.syncFolders(folder);
      return { size, md5 };
    } catch (err) {
      await fsp.rm(temporary, { force: true });
      throw err;
    }
  }

  async listObjects(bucket, options) {
    // s3rver 3.7.1 leaves out a common prefix whose folder holds only folders ("a/" when the
    // only key under it is "a/b/c"), so MLflow would miss nested artifact folders: list every
    // key under the prefix, then group by the delimiter here.
    const { delimiter = '', prefix = '', maxKeys = Infinity } = options;
    if (!delimiter) return super.listObjects(bucket, options);
    const all = await super.listObjects(bucket, { ...options, delimiter: '', maxKeys: Infinity });
    const objects = [];
    const commonPrefixes = new Set();
    let isTruncated = false;
    for (const object of all.objects) {
      const rest = object.key.slice(prefix.length);
      const at = rest.indexOf(delimiter);
      if (at !== -1) {
        commonPrefixes.add(prefix + rest.slice(0, at + delimiter.length));
      } else if (objects.length < maxKeys) {
        objects.push(object);
      } else {
        isTruncated = true;
        break;
      }
    }
    return { objects, commonPrefixes: [...commonPrefixes].sort(), isTruncated };
  }

  async putPart(bucket, uploadId, partNumber, content) {
    // A part only needs to be complete on disk before CompleteMultipartUpload reads it; the
    // object it becomes is made durable by putObject.
    const partPath = path.join(
      this.getResourcePath(bucket, undefined, 'uploads'),
      uploadId,
      partNumber.toString(),
    );
    await fsp.mkdir(path.dirname(partPath), { recursive: true });
    const [size, md5] = await writeContent(partPath, content, false);
    await fsp.writeFile(`${partPath}.md5`, md5);
    return { size, md5 };
  }
}

function parseArguments(argv) {
  const options = {};
  for (let i = 0; i < argv.length; i += 2) {
    const name = argv[i];
    if (!name.startsWith('--') || argv[i + 1] === undefined) {
      throw new Error(`bad argument ${name}: expected --name value pairs`);
    }
    options[name.slice(2)] = argv[i + 1];
  }
  for (const required of ['directory', 'port', 'bucket']) {
    if (!options[required]) throw new Error(`missing --${required}`);
  }
  return options;
}

async function main() {
  const options = parseArguments(process.argv.slice(2));
  const accessKey = process.env.S3_ACCESS_KEY;
  const secretKey = process.env.S3_SECRET_KEY;
  if (accessKey && secretKey) DUMMY_ACCOUNT.createKeyPair(accessKey, secretKey);
  const directory = path.resolve(options.directory);
  await fsp.mkdir(directory, { recursive: true });
  const server = new S3rver({
    directory,
    address: options.address || '127.0.0.1',
    port: Number(options.port),
    silent: false,
    // Path-style requests only: a client that names the server by a host name (a Compose
    // service name such as `minio`) would otherwise have it taken for a bucket.
    vhostBuckets: false,
    configureBuckets: [{ name: options.bucket, configs: [] }],
  });
  server.store = server.context.store = new DurableStore(directory);
  server.middleware.unshift(async (ctx, next) => {
    if (ctx.path !== HEALTH_PATH) return next();
    ctx.body = JSON.stringify({ status: 'ok', directory, bucket: options.bucket });
    ctx.type = 'application/json';
  });
  const address = await server.run();
  console.log(`s3 server on ${address.address}:${address.port}, data in ${directory}`);
  const stop = () => server.close().then(() => process.exit(0));
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

main().catch((err) => {
  console.error(`s3 server failed: ${err.message}`);
  process.exit(1);
});
