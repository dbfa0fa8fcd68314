// Ships beside the generated mend.kt: the stable code of every MendException, to translate
// or report by. `message` already is the core's sentence.
package app.mend.core

/** A stable code for this kind of error; it never changes. */
val MendException.code: String
    get() = when (this) {
        is MendException.PermissionDenied -> "permission_denied"
        is MendException.NotFound -> "not_found"
        is MendException.Invalid -> "invalid"
        is MendException.Removed -> "removed"
        is MendException.Invite -> "invite"
        is MendException.Pairing -> "pairing"
        is MendException.DeviceRemoved -> "device_removed"
        is MendException.Locked -> "locked"
        is MendException.TooNew -> "too_new"
        is MendException.Missing -> "missing"
        is MendException.Corrupt -> "corrupt"
        is MendException.Io -> "io"
        is MendException.Tampered -> "tampered"
        is MendException.Unreachable -> "unreachable"
        is MendException.UntrustedRelay -> "untrusted_relay"
        is MendException.Closed -> "closed"
        is MendException.Internal -> "internal"
        is MendException.Erased -> "erased"
    }
