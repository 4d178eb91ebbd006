/* Everything in libtcpkit: include this one header, or only the parts you use. */
#ifndef TCPKIT_TCPKIT_H
#define TCPKIT_TCPKIT_H

#include "tcpkit/addr.h"
#include "tcpkit/balance.h"
#include "tcpkit/buf.h"
#include "tcpkit/codec.h"
#include "tcpkit/conn.h"
#include "tcpkit/dial.h"
#include "tcpkit/echo.h"
#include "tcpkit/fclient.h"
#include "tcpkit/files.h"
#include "tcpkit/frame.h"
#include "tcpkit/listener.h"
#include "tcpkit/log.h"
#include "tcpkit/loop.h"
#include "tcpkit/metrics.h"
#include "tcpkit/parse.h"
#include "tcpkit/pool.h"
#include "tcpkit/proxy.h"
#include "tcpkit/relay.h"
#include "tcpkit/scan.h"
#include "tcpkit/server.h"
#include "tcpkit/sock.h"
#include "tcpkit/text.h"
#include "tcpkit/tls.h"
#include "tcpkit/workers.h"

#endif
