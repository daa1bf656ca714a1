/**
 * The CRI keychain of `soci-ts serve` (`[cri_keychain]`): the CRI image service passed through to containerd's
 * (grpc/cri_image_proxy.ts), served on the daemon's socket, remembering each PullImage's credentials
 * (registry/pull_credentials.ts) for the registry client of the lazy layers. kubelet is pointed at it with
 * `--image-service-endpoint=unix://<address>`; its runtime endpoint stays containerd's.
 */
import type { Config } from "../config/schema.ts";
import { criImageProxy, type CriImageProxy } from "../grpc/cri_image_proxy.ts";
import { PullCredentials } from "../registry/pull_credentials.ts";
import { ConfigError } from "../util/errors.ts";
import type { Logger } from "../util/log.ts";

/** The keychain's two halves: the service to serve, and the credentials it fills for the registry client. */
export interface CriKeychain {
  proxy: CriImageProxy;
  credentials: PullCredentials;
}

/**
 * The CRI keychain the config asks for, or undefined when `[cri_keychain] enable_keychain` is false. `address`
 * is the daemon's own socket. Throws ConfigError when `image_service_path` is empty or is `address` itself (the
 * calls would come back to soci-ts forever).
 */
export function criKeychain(c: Config, address: string, logger: Logger): CriKeychain | undefined {
  const k = c.criKeychain;
  if (!k.enableKeychain) return undefined;
  const backend = k.imageServicePath.replace(/^unix:\/\//, "");
  if (backend === "")
    throw new ConfigError(
      'Cannot serve the CRI image service: [cri_keychain] image_service_path is empty (containerd\'s socket is needed, e.g. "/run/containerd/containerd.sock")',
      "cri_keychain.image_service_path",
    );
  if (backend === address.replace(/^unix:\/\//, ""))
    throw new ConfigError(
      `Cannot serve the CRI image service: [cri_keychain] image_service_path "${backend}" is soci-ts's own address; it must be containerd's socket`,
      "cri_keychain.image_service_path",
    );
  const credentials = new PullCredentials({ ttlMs: k.credentialTtlSec * 1000 });
  const proxy = criImageProxy(backend, {
    logger,
    onPull: ({ image, auth }) => {
      const kept = credentials.remember(
        image,
        auth && {
          username: auth.username,
          password: auth.password,
          auth: auth.auth,
          identityToken: auth.identity_token,
          registryToken: auth.registry_token,
          serverAddress: auth.server_address,
        },
      );
      if (kept) logger.info("Remembered the credentials of a CRI pull", { image });
      else if (auth)
        logger.info("Not remembering the credentials of a CRI pull: none usable, or server_address is another host", {
          image,
          serverAddress: auth.server_address,
        });
      else logger.info("CRI pull without credentials", { image });
    },
  });
  return { proxy, credentials };
}
