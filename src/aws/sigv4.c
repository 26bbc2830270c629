/* placeholder: replaced by the module's implementation */
typedef int kk_placeholder_sigv4_t;
