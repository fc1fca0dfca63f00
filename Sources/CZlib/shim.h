#ifndef LOGKV_CZLIB_SHIM_H
#define LOGKV_CZLIB_SHIM_H
#include <zlib.h>
#endif
