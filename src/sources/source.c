typedef int kk_placeholder_source_t;
