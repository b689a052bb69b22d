/*
 * PKCS#11 names: return values (CKR_*), mechanisms (CKM_*), object classes and key types, so every
 * PKCS#11 failure and every mechanism in a message is named, not numbered.
 *
 * The entries list the names <p11-kit/pkcs11.h> (PKCS#11 2.40) defines; the values come from the
 * header at compile time. Where two names share a value (CKM_ECDSA_KEY_PAIR_GEN, CAST5/CAST128) the
 * first entry is the one printed; both are accepted by hsm_mech_from_name().
 */
#include <stdio.h>
#include <string.h>

#include <p11-kit/pkcs11.h>

#include "hsm_internal.h"

struct name_entry {
        unsigned long value;
        const char *name;
};

#define N(x) {x, #x}

static const struct name_entry rv_names[] = {
        N(CKR_OK),
        N(CKR_CANCEL),
        N(CKR_HOST_MEMORY),
        N(CKR_SLOT_ID_INVALID),
        N(CKR_GENERAL_ERROR),
        N(CKR_FUNCTION_FAILED),
        N(CKR_ARGUMENTS_BAD),
        N(CKR_NO_EVENT),
        N(CKR_NEED_TO_CREATE_THREADS),
        N(CKR_CANT_LOCK),
        N(CKR_ATTRIBUTE_READ_ONLY),
        N(CKR_ATTRIBUTE_SENSITIVE),
        N(CKR_ATTRIBUTE_TYPE_INVALID),
        N(CKR_ATTRIBUTE_VALUE_INVALID),
        N(CKR_ACTION_PROHIBITED),
        N(CKR_DATA_INVALID),
        N(CKR_DATA_LEN_RANGE),
        N(CKR_DEVICE_ERROR),
        N(CKR_DEVICE_MEMORY),
        N(CKR_DEVICE_REMOVED),
        N(CKR_ENCRYPTED_DATA_INVALID),
        N(CKR_ENCRYPTED_DATA_LEN_RANGE),
        N(CKR_FUNCTION_CANCELED),
        N(CKR_FUNCTION_NOT_PARALLEL),
        N(CKR_FUNCTION_NOT_SUPPORTED),
        N(CKR_KEY_HANDLE_INVALID),
        N(CKR_KEY_SIZE_RANGE),
        N(CKR_KEY_TYPE_INCONSISTENT),
        N(CKR_KEY_NOT_NEEDED),
        N(CKR_KEY_CHANGED),
        N(CKR_KEY_NEEDED),
        N(CKR_KEY_INDIGESTIBLE),
        N(CKR_KEY_FUNCTION_NOT_PERMITTED),
        N(CKR_KEY_NOT_WRAPPABLE),
        N(CKR_KEY_UNEXTRACTABLE),
        N(CKR_MECHANISM_INVALID),
        N(CKR_MECHANISM_PARAM_INVALID),
        N(CKR_OBJECT_HANDLE_INVALID),
        N(CKR_OPERATION_ACTIVE),
        N(CKR_OPERATION_NOT_INITIALIZED),
        N(CKR_PIN_INCORRECT),
        N(CKR_PIN_INVALID),
        N(CKR_PIN_LEN_RANGE),
        N(CKR_PIN_EXPIRED),
        N(CKR_PIN_LOCKED),
        N(CKR_SESSION_CLOSED),
        N(CKR_SESSION_COUNT),
        N(CKR_SESSION_HANDLE_INVALID),
        N(CKR_SESSION_PARALLEL_NOT_SUPPORTED),
        N(CKR_SESSION_READ_ONLY),
        N(CKR_SESSION_EXISTS),
        N(CKR_SESSION_READ_ONLY_EXISTS),
        N(CKR_SESSION_READ_WRITE_SO_EXISTS),
        N(CKR_SIGNATURE_INVALID),
        N(CKR_SIGNATURE_LEN_RANGE),
        N(CKR_TEMPLATE_INCOMPLETE),
        N(CKR_TEMPLATE_INCONSISTENT),
        N(CKR_TOKEN_NOT_PRESENT),
        N(CKR_TOKEN_NOT_RECOGNIZED),
        N(CKR_TOKEN_WRITE_PROTECTED),
        N(CKR_UNWRAPPING_KEY_SIZE_RANGE),
        N(CKR_UNWRAPPING_KEY_TYPE_INCONSISTENT),
        N(CKR_USER_ALREADY_LOGGED_IN),
        N(CKR_USER_NOT_LOGGED_IN),
        N(CKR_USER_PIN_NOT_INITIALIZED),
        N(CKR_USER_TYPE_INVALID),
        N(CKR_USER_ANOTHER_ALREADY_LOGGED_IN),
        N(CKR_USER_TOO_MANY_TYPES),
        N(CKR_WRAPPED_KEY_INVALID),
        N(CKR_WRAPPED_KEY_LEN_RANGE),
        N(CKR_WRAPPING_KEY_HANDLE_INVALID),
        N(CKR_WRAPPING_KEY_SIZE_RANGE),
        N(CKR_WRAPPING_KEY_TYPE_INCONSISTENT),
        N(CKR_RANDOM_SEED_NOT_SUPPORTED),
        N(CKR_RANDOM_NO_RNG),
        N(CKR_DOMAIN_PARAMS_INVALID),
        N(CKR_CURVE_NOT_SUPPORTED),
        N(CKR_BUFFER_TOO_SMALL),
        N(CKR_SAVED_STATE_INVALID),
        N(CKR_INFORMATION_SENSITIVE),
        N(CKR_STATE_UNSAVEABLE),
        N(CKR_CRYPTOKI_NOT_INITIALIZED),
        N(CKR_CRYPTOKI_ALREADY_INITIALIZED),
        N(CKR_MUTEX_BAD),
        N(CKR_MUTEX_NOT_LOCKED),
        N(CKR_NEW_PIN_MODE),
        N(CKR_NEXT_OTP),
        N(CKR_EXCEEDED_MAX_ITERATIONS),
        N(CKR_FIPS_SELF_TEST_FAILED),
        N(CKR_LIBRARY_LOAD_FAILED),
        N(CKR_PIN_TOO_WEAK),
        N(CKR_PUBLIC_KEY_INVALID),
        N(CKR_FUNCTION_REJECTED),
};

static const struct name_entry mech_names[] = {
        N(CKM_EC_KEY_PAIR_GEN),
        N(CKM_RSA_PKCS_KEY_PAIR_GEN),
        N(CKM_RSA_PKCS),
        N(CKM_RSA_9796),
        N(CKM_RSA_X_509),
        N(CKM_MD2_RSA_PKCS),
        N(CKM_MD5_RSA_PKCS),
        N(CKM_SHA1_RSA_PKCS),
        N(CKM_RIPEMD128_RSA_PKCS),
        N(CKM_RIPEMD160_RSA_PKCS),
        N(CKM_RSA_PKCS_OAEP),
        N(CKM_RSA_X9_31_KEY_PAIR_GEN),
        N(CKM_RSA_X9_31),
        N(CKM_SHA1_RSA_X9_31),
        N(CKM_RSA_PKCS_PSS),
        N(CKM_SHA1_RSA_PKCS_PSS),
        N(CKM_DSA_KEY_PAIR_GEN),
        N(CKM_DSA_SHA1),
        N(CKM_DSA_SHA224),
        N(CKM_DSA_SHA256),
        N(CKM_DSA_SHA384),
        N(CKM_DSA_SHA512),
        N(CKM_DH_PKCS_KEY_PAIR_GEN),
        N(CKM_DH_PKCS_DERIVE),
        N(CKM_X9_42_DH_DERIVE),
        N(CKM_X9_42_DH_HYBRID_DERIVE),
        N(CKM_X9_42_MQV_DERIVE),
        N(CKM_SHA256_RSA_PKCS),
        N(CKM_SHA384_RSA_PKCS),
        N(CKM_SHA512_RSA_PKCS),
        N(CKM_SHA256_RSA_PKCS_PSS),
        N(CKM_SHA384_RSA_PKCS_PSS),
        N(CKM_SHA512_RSA_PKCS_PSS),
        N(CKM_SHA512_224),
        N(CKM_SHA512_224_HMAC),
        N(CKM_SHA512_224_HMAC_GENERAL),
        N(CKM_SHA512_224_KEY_DERIVATION),
        N(CKM_SHA512_256),
        N(CKM_SHA512_256_HMAC),
        N(CKM_SHA512_256_HMAC_GENERAL),
        N(CKM_SHA512_256_KEY_DERIVATION),
        N(CKM_SHA512_T),
        N(CKM_SHA512_T_HMAC),
        N(CKM_SHA512_T_HMAC_GENERAL),
        N(CKM_SHA512_T_KEY_DERIVATION),
        N(CKM_RC2_KEY_GEN),
        N(CKM_RC2_ECB),
        N(CKM_RC2_MAC_GENERAL),
        N(CKM_RC2_CBC_PAD),
        N(CKM_RC4_KEY_GEN),
        N(CKM_RC4),
        N(CKM_DES_KEY_GEN),
        N(CKM_DES_ECB),
        N(CKM_DES_CBC),
        N(CKM_DES_MAC),
        N(CKM_DES_MAC_GENERAL),
        N(CKM_DES_CBC_PAD),
        N(CKM_DES2_KEY_GEN),
        N(CKM_DES3_KEY_GEN),
        N(CKM_DES3_ECB),
        N(CKM_DES3_CBC),
        N(CKM_DES3_MAC),
        N(CKM_DES3_MAC_GENERAL),
        N(CKM_DES3_CBC_PAD),
        N(CKM_DES3_CMAC_GENERAL),
        N(CKM_DES3_CMAC),
        N(CKM_CDMF_KEY_GEN),
        N(CKM_CDMF_ECB),
        N(CKM_CDMF_CBC),
        N(CKM_CDMF_MAC),
        N(CKM_CDMF_MAC_GENERAL),
        N(CKM_CDMF_CBC_PAD),
        N(CKM_DES_OFB64),
        N(CKM_DES_OFB8),
        N(CKM_DES_CFB64),
        N(CKM_DES_CFB8),
        N(CKM_MD2),
        N(CKM_MD2_HMAC),
        N(CKM_MD2_HMAC_GENERAL),
        N(CKM_MD5),
        N(CKM_MD5_HMAC),
        N(CKM_MD5_HMAC_GENERAL),
        N(CKM_SHA_1),
        N(CKM_SHA_1_HMAC),
        N(CKM_SHA_1_HMAC_GENERAL),
        N(CKM_RIPEMD128),
        N(CKM_RIPEMD128_HMAC),
        N(CKM_RIPEMD128_HMAC_GENERAL),
        N(CKM_RIPEMD160),
        N(CKM_RIPEMD160_HMAC),
        N(CKM_RIPEMD160_HMAC_GENERAL),
        N(CKM_SHA256),
        N(CKM_SHA256_HMAC),
        N(CKM_SHA256_HMAC_GENERAL),
        N(CKM_SHA384),
        N(CKM_SHA384_HMAC),
        N(CKM_SHA384_HMAC_GENERAL),
        N(CKM_SHA512),
        N(CKM_SHA512_HMAC),
        N(CKM_SHA512_HMAC_GENERAL),
        N(CKM_SECURID_KEY_GEN),
        N(CKM_SECURID),
        N(CKM_HOTP_KEY_GEN),
        N(CKM_HOTP),
        N(CKM_ACTI),
        N(CKM_ACTI_KEY_GEN),
        N(CKM_CAST_KEY_GEN),
        N(CKM_CAST_ECB),
        N(CKM_CAST_CBC),
        N(CKM_CAST_MAC),
        N(CKM_CAST_MAC_GENERAL),
        N(CKM_CAST_CBC_PAD),
        N(CKM_CAST3_KEY_GEN),
        N(CKM_CAST3_ECB),
        N(CKM_CAST3_CBC),
        N(CKM_CAST3_MAC),
        N(CKM_CAST3_MAC_GENERAL),
        N(CKM_CAST3_CBC_PAD),
        N(CKM_CAST5_KEY_GEN),
        N(CKM_CAST128_KEY_GEN),
        N(CKM_CAST5_ECB),
        N(CKM_CAST128_ECB),
        N(CKM_CAST5_CBC),
        N(CKM_CAST128_CBC),
        N(CKM_CAST5_MAC),
        N(CKM_CAST5_MAC_GENERAL),
        N(CKM_CAST128_MAC_GENERAL),
        N(CKM_CAST5_CBC_PAD),
        N(CKM_CAST128_CBC_PAD),
        N(CKM_RC5_KEY_GEN),
        N(CKM_RC5_ECB),
        N(CKM_RC5_CBC),
        N(CKM_RC5_MAC),
        N(CKM_RC5_MAC_GENERAL),
        N(CKM_RC5_CBC_PAD),
        N(CKM_IDEA_KEY_GEN),
        N(CKM_IDEA_ECB),
        N(CKM_IDEA_MAC),
        N(CKM_IDEA_MAC_GENERAL),
        N(CKM_IDEA_CBC_PAD),
        N(CKM_GENERIC_SECRET_KEY_GEN),
        N(CKM_CONCATENATE_BASE_AND_KEY),
        N(CKM_CONCATENATE_BASE_AND_DATA),
        N(CKM_CONCATENATE_DATA_AND_BASE),
        N(CKM_XOR_BASE_AND_DATA),
        N(CKM_EXTRACT_KEY_FROM_KEY),
        N(CKM_SSL3_PRE_MASTER_KEY_GEN),
        N(CKM_SSL3_MASTER_KEY_DERIVE),
        N(CKM_SSL3_KEY_AND_MAC_DERIVE),
        N(CKM_SSL3_MASTER_KEY_DERIVE_DH),
        N(CKM_TLS_PRE_MASTER_KEY_GEN),
        N(CKM_TLS_MASTER_KEY_DERIVE),
        N(CKM_TLS_KEY_AND_MAC_DERIVE),
        N(CKM_TLS_MASTER_KEY_DERIVE_DH),
        N(CKM_TLS_PRF),
        N(CKM_SSL3_MD5_MAC),
        N(CKM_SSL3_SHA1_MAC),
        N(CKM_MD5_KEY_DERIVATION),
        N(CKM_MD2_KEY_DERIVATION),
        N(CKM_SHA1_KEY_DERIVATION),
        N(CKM_SHA256_KEY_DERIVATION),
        N(CKM_SHA384_KEY_DERIVATION),
        N(CKM_SHA512_KEY_DERIVATION),
        N(CKM_PBE_MD2_DES_CBC),
        N(CKM_PBE_MD5_DES_CBC),
        N(CKM_PBE_MD5_CAST_CBC),
        N(CKM_PBE_MD5_CAST3_CBC),
        N(CKM_PBE_MD5_CAST5_CBC),
        N(CKM_PBE_MD5_CAST128_CBC),
        N(CKM_PBE_SHA1_CAST5_CBC),
        N(CKM_PBE_SHA1_CAST128_CBC),
        N(CKM_PBE_SHA1_RC4_128),
        N(CKM_PBE_SHA1_RC4_40),
        N(CKM_PBE_SHA1_DES3_EDE_CBC),
        N(CKM_PBE_SHA1_DES2_EDE_CBC),
        N(CKM_PBE_SHA1_RC2_128_CBC),
        N(CKM_PBE_SHA1_RC2_40_CBC),
        N(CKM_PKCS5_PBKD2),
        N(CKM_PBA_SHA1_WITH_SHA1_HMAC),
        N(CKM_WTLS_PRE_MASTER_KEY_GEN),
        N(CKM_WTLS_MASTER_KEY_DERIVE),
        N(CKM_WTLS_MASTER_KEY_DERIVE_DH_ECC),
        N(CKM_WTLS_PRF),
        N(CKM_WTLS_SERVER_KEY_AND_MAC_DERIVE),
        N(CKM_WTLS_CLIENT_KEY_AND_MAC_DERIVE),
        N(CKM_TLS10_MAC_SERVER),
        N(CKM_TLS10_MAC_CLIENT),
        N(CKM_TLS12_MAC),
        N(CKM_TLS12_KDF),
        N(CKM_TLS12_MASTER_KEY_DERIVE),
        N(CKM_TLS12_KEY_AND_MAC_DERIVE),
        N(CKM_TLS12_MASTER_KEY_DERIVE_DH),
        N(CKM_TLS12_KEY_SAFE_DERIVE),
        N(CKM_TLS_MAC),
        N(CKM_TLS_KDF),
        N(CKM_KEY_WRAP_LYNKS),
        N(CKM_KEY_WRAP_SET_OAEP),
        N(CKM_CMS_SIG),
        N(CKM_KIP_DERIVE),
        N(CKM_KIP_WRAP),
        N(CKM_KIP_MAC),
        N(CKM_ARIA_KEY_GEN),
        N(CKM_ARIA_ECB),
        N(CKM_ARIA_CBC),
        N(CKM_ARIA_MAC),
        N(CKM_ARIA_MAC_GENERAL),
        N(CKM_ARIA_CBC_PAD),
        N(CKM_ARIA_ECB_ENCRYPT_DATA),
        N(CKM_ARIA_CBC_ENCRYPT_DATA),
        N(CKM_SEED_KEY_GEN),
        N(CKM_SEED_ECB),
        N(CKM_SEED_CBC),
        N(CKM_SEED_MAC),
        N(CKM_SEED_MAC_GENERAL),
        N(CKM_SEED_CBC_PAD),
        N(CKM_SEED_ECB_ENCRYPT_DATA),
        N(CKM_SEED_CBC_ENCRYPT_DATA),
        N(CKM_SKIPJACK_KEY_GEN),
        N(CKM_SKIPJACK_ECB64),
        N(CKM_SKIPJACK_CBC64),
        N(CKM_SKIPJACK_OFB64),
        N(CKM_SKIPJACK_CFB64),
        N(CKM_SKIPJACK_CFB32),
        N(CKM_SKIPJACK_CFB16),
        N(CKM_SKIPJACK_CFB8),
        N(CKM_SKIPJACK_WRAP),
        N(CKM_SKIPJACK_PRIVATE_WRAP),
        N(CKM_SKIPJACK_RELAYX),
        N(CKM_KEA_KEY_PAIR_GEN),
        N(CKM_KEA_KEY_DERIVE),
        N(CKM_FORTEZZA_TIMESTAMP),
        N(CKM_BATON_KEY_GEN),
        N(CKM_BATON_ECB128),
        N(CKM_BATON_ECB96),
        N(CKM_BATON_CBC128),
        N(CKM_BATON_COUNTER),
        N(CKM_BATON_SHUFFLE),
        N(CKM_BATON_WRAP),
        N(CKM_ECDSA_KEY_PAIR_GEN),
        N(CKM_EC_KEY_PAIR_GEN),
        N(CKM_ECDSA),
        N(CKM_ECDSA_SHA1),
        N(CKM_ECDSA_SHA224),
        N(CKM_ECDSA_SHA256),
        N(CKM_ECDSA_SHA384),
        N(CKM_ECDSA_SHA512),
        N(CKM_ECDH1_DERIVE),
        N(CKM_ECDH1_COFACTOR_DERIVE),
        N(CKM_ECMQV_DERIVE),
        N(CKM_ECDH_AES_KEY_WRAP),
        N(CKM_RSA_AES_KEY_WRAP),
        N(CKM_JUNIPER_KEY_GEN),
        N(CKM_JUNIPER_ECB128),
        N(CKM_JUNIPER_CBC128),
        N(CKM_JUNIPER_COUNTER),
        N(CKM_JUNIPER_SHUFFLE),
        N(CKM_JUNIPER_WRAP),
        N(CKM_FASTHASH),
        N(CKM_AES_KEY_GEN),
        N(CKM_AES_ECB),
        N(CKM_AES_CBC),
        N(CKM_AES_MAC),
        N(CKM_AES_MAC_GENERAL),
        N(CKM_AES_CBC_PAD),
        N(CKM_AES_CTR),
        N(CKM_AES_GCM),
        N(CKM_AES_CCM),
        N(CKM_AES_CTS),
        N(CKM_AES_CMAC),
        N(CKM_AES_CMAC_GENERAL),
        N(CKM_AES_XCBC_MAC),
        N(CKM_AES_XCBC_MAC_96),
        N(CKM_AES_GMAC),
        N(CKM_BLOWFISH_KEY_GEN),
        N(CKM_BLOWFISH_CBC),
        N(CKM_TWOFISH_KEY_GEN),
        N(CKM_TWOFISH_CBC),
        N(CKM_BLOWFISH_CBC_PAD),
        N(CKM_TWOFISH_CBC_PAD),
        N(CKM_DES_ECB_ENCRYPT_DATA),
        N(CKM_DES_CBC_ENCRYPT_DATA),
        N(CKM_DES3_ECB_ENCRYPT_DATA),
        N(CKM_DES3_CBC_ENCRYPT_DATA),
        N(CKM_AES_ECB_ENCRYPT_DATA),
        N(CKM_AES_CBC_ENCRYPT_DATA),
        N(CKM_GOSTR3410_KEY_PAIR_GEN),
        N(CKM_GOSTR3410),
        N(CKM_GOSTR3410_WITH_GOSTR3411),
        N(CKM_GOSTR3410_KEY_WRAP),
        N(CKM_GOSTR3410_DERIVE),
        N(CKM_GOSTR3411),
        N(CKM_GOSTR3411_HMAC),
        N(CKM_GOST28147_KEY_GEN),
        N(CKM_GOST28147_ECB),
        N(CKM_GOST28147),
        N(CKM_GOST28147_MAC),
        N(CKM_GOST28147_KEY_WRAP),
        N(CKM_DSA_PARAMETER_GEN),
        N(CKM_DH_PKCS_PARAMETER_GEN),
        N(CKM_X9_42_DH_PARAMETER_GEN),
        N(CKM_DSA_PROBABLISTIC_PARAMETER_GEN),
        N(CKM_DSA_SHAWE_TAYLOR_PARAMETER_GEN),
        N(CKM_AES_OFB),
        N(CKM_AES_CFB64),
        N(CKM_AES_CFB8),
        N(CKM_AES_CFB128),
        N(CKM_AES_CFB1),
        N(CKM_SHA224),
        N(CKM_SHA224_HMAC),
        N(CKM_SHA224_HMAC_GENERAL),
        N(CKM_SHA224_RSA_PKCS),
        N(CKM_SHA224_RSA_PKCS_PSS),
        N(CKM_SHA224_KEY_DERIVATION),
        N(CKM_CAMELLIA_KEY_GEN),
        N(CKM_CAMELLIA_ECB),
        N(CKM_CAMELLIA_CBC),
        N(CKM_CAMELLIA_MAC),
        N(CKM_CAMELLIA_MAC_GENERAL),
        N(CKM_CAMELLIA_CBC_PAD),
        N(CKM_CAMELLIA_ECB_ENCRYPT_DATA),
        N(CKM_CAMELLIA_CBC_ENCRYPT_DATA),
        N(CKM_CAMELLIA_CTR),
        N(CKM_AES_KEY_WRAP),
        N(CKM_AES_KEY_WRAP_PAD),
        N(CKM_RSA_PKCS_TPM_1_1),
        N(CKM_RSA_PKCS_OAEP_TPM_1_1),
        N(CKM_EC_EDWARDS_KEY_PAIR_GEN),
        N(CKM_EDDSA),
};

static const struct name_entry class_names[] = {
        N(CKO_DATA),
        N(CKO_CERTIFICATE),
        N(CKO_PUBLIC_KEY),
        N(CKO_PRIVATE_KEY),
        N(CKO_SECRET_KEY),
        N(CKO_HW_FEATURE),
        N(CKO_DOMAIN_PARAMETERS),
        N(CKO_MECHANISM),
        N(CKO_OTP_KEY),
};

static const struct name_entry key_type_names[] = {
        N(CKK_EC),
        N(CKK_RSA),
        N(CKK_DSA),
        N(CKK_DH),
        N(CKK_ECDSA),
        N(CKK_EC),
        N(CKK_X9_42_DH),
        N(CKK_KEA),
        N(CKK_GENERIC_SECRET),
        N(CKK_RC2),
        N(CKK_RC4),
        N(CKK_DES),
        N(CKK_DES2),
        N(CKK_DES3),
        N(CKK_CAST),
        N(CKK_CAST3),
        N(CKK_CAST128),
        N(CKK_RC5),
        N(CKK_IDEA),
        N(CKK_SKIPJACK),
        N(CKK_BATON),
        N(CKK_JUNIPER),
        N(CKK_CDMF),
        N(CKK_AES),
        N(CKK_BLOWFISH),
        N(CKK_TWOFISH),
        N(CKK_SECURID),
        N(CKK_HOTP),
        N(CKK_ACTI),
        N(CKK_CAMELLIA),
        N(CKK_ARIA),
        N(CKK_MD5_HMAC),
        N(CKK_SHA_1_HMAC),
        N(CKK_RIPEMD128_HMAC),
        N(CKK_RIPEMD160_HMAC),
        N(CKK_SHA256_HMAC),
        N(CKK_SHA384_HMAC),
        N(CKK_SHA512_HMAC),
        N(CKK_SHA224_HMAC),
        N(CKK_SEED),
        N(CKK_GOSTR3410),
        N(CKK_GOSTR3411),
        N(CKK_GOST28147),
        N(CKK_EC_EDWARDS),
};

static const struct name_entry token_flag_names[] = {
        N(CKF_RNG),
        N(CKF_WRITE_PROTECTED),
        N(CKF_LOGIN_REQUIRED),
        N(CKF_USER_PIN_INITIALIZED),
        N(CKF_RESTORE_KEY_NOT_NEEDED),
        N(CKF_CLOCK_ON_TOKEN),
        N(CKF_PROTECTED_AUTHENTICATION_PATH),
        N(CKF_DUAL_CRYPTO_OPERATIONS),
        N(CKF_TOKEN_INITIALIZED),
        N(CKF_SECONDARY_AUTHENTICATION),
        N(CKF_USER_PIN_COUNT_LOW),
        N(CKF_USER_PIN_FINAL_TRY),
        N(CKF_USER_PIN_LOCKED),
        N(CKF_USER_PIN_TO_BE_CHANGED),
        N(CKF_SO_PIN_COUNT_LOW),
        N(CKF_SO_PIN_FINAL_TRY),
        N(CKF_SO_PIN_LOCKED),
        N(CKF_SO_PIN_TO_BE_CHANGED),
};
#undef N

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

static const char *table_name(const struct name_entry *t, size_t n, unsigned long v)
{
        for (size_t i = 0; i < n; i++)
                if (t[i].value == v)
                        return t[i].name;
        return NULL;
}

/* An unknown value as text; thread-local so concurrent slots do not share it. */
static const char *unknown_name(const char *prefix, unsigned long v)
{
        static _Thread_local char buf[48];

        if (v & CKR_VENDOR_DEFINED)
                snprintf(buf, sizeof(buf), "%s_VENDOR_DEFINED+0x%lx", prefix,
                         v & ~(unsigned long)CKR_VENDOR_DEFINED);
        else
                snprintf(buf, sizeof(buf), "%s_0x%lx", prefix, v);
        return buf;
}

const char *hsm_rv_name(unsigned long rv)
{
        const char *s = table_name(rv_names, COUNT(rv_names), rv);

        return s ? s : unknown_name("CKR", rv);
}

const char *hsm_mech_name(unsigned long mech)
{
        const char *s = table_name(mech_names, COUNT(mech_names), mech);

        return s ? s : unknown_name("CKM", mech);
}

const char *hsm_class_name(unsigned long cls)
{
        const char *s = table_name(class_names, COUNT(class_names), cls);

        return s ? s : unknown_name("CKO", cls);
}

const char *hsm_key_type_name(unsigned long type)
{
        const char *s = table_name(key_type_names, COUNT(key_type_names), type);

        return s ? s : unknown_name("CKK", type);
}

int hsm_mech_from_name(const char *name, unsigned long *ret)
{
        char full[64];

        if (name == NULL)
                return KILN_E_INVAL;
        /* accept "ECDSA" for "CKM_ECDSA" */
        if (strncmp(name, "CKM_", 4) != 0) {
                if (kiln_snprintf(full, sizeof(full), "CKM_%s", name) < 0)
                        return KILN_E_NOT_FOUND;
                name = full;
        }
        for (size_t i = 0; i < COUNT(mech_names); i++) {
                if (strcmp(mech_names[i].name, name) == 0) {
                        *ret = mech_names[i].value;
                        return KILN_OK;
                }
        }
        return KILN_E_NOT_FOUND;
}

int hsm_token_flags_str(unsigned long flags, char *out, size_t cap)
{
        size_t len = 0;
        unsigned long known = 0;

        if (cap == 0)
                return KILN_E_RANGE;
        out[0] = '\0';
        for (size_t i = 0; i < COUNT(token_flag_names); i++) {
                known |= token_flag_names[i].value;
                if (!(flags & token_flag_names[i].value))
                        continue;
                if (kiln_snprintf(out + len, cap - len, "%s%s", len ? "|" : "",
                                  token_flag_names[i].name) < 0)
                        return KILN_E_RANGE;
                len += strlen(out + len);
        }
        if (flags & ~known) {
                if (kiln_snprintf(out + len, cap - len, "%s0x%lx", len ? "|" : "",
                                  flags & ~known) < 0)
                        return KILN_E_RANGE;
        }
        return KILN_OK;
}
