#include "kk/log.h"
int main(void) { kk_log(KK_LOG_INFO, NULL, "kubemq-kinesis"); return 0; }
