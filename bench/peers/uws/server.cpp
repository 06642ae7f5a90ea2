// A chat server as a uWebSockets user writes it: one thread, one uWS::App,
// rooms in memory (no persistence), uWS's own topic pub/sub for the fan-out
// (ws->subscribe(room) on join, app.publish(room, message, TEXT) on send: the
// message is serialized once and uWS copies it to every subscriber).
// JSON with nlohmann::json (Debian's nlohmann-json3-dev).
//
// It speaks the part of sori's protocol that `sori bench` uses (PROTOCOL.md
// §2-§4): hello on connect, create, join, send (ack to the sender, then a
// message event to every joined connection including the sender), ping.
// Guests only: /ws?user=NAME, no tokens.
//
//   uws-chat [--host 127.0.0.1] [--port 8080]
// Prints "listening HOST:PORT" once it accepts connections.
//
// Settings: compression off (uWS's default), maxBackpressure 4 MiB to match
// sori's default --out-limit (uWS's default, 64 KiB, would drop messages to
// a subscriber that falls 64 KiB behind: a different guarantee), everything
// else uWS's defaults.
#include "App.h"

#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>
#include <unordered_map>

using json = nlohmann::ordered_json;

namespace {

struct PerSocketData {
    std::string user;
};

struct Room {
    std::string kind;
    uint64_t seq = 0;
};

std::unordered_map<std::string, Room> rooms;
uint64_t next_session = 1, next_id = 1;

int64_t now_ms()
{
    using namespace std::chrono;
    return duration_cast<milliseconds>(system_clock::now().time_since_epoch()).count();
}

template <class WS> void reply(WS *ws, const json &j)
{
    ws->send(j.dump(), uWS::OpCode::TEXT);
}

template <class WS> void error(WS *ws, const json *ref, const char *code, const char *message)
{
    json e = {{"type", "error"}, {"code", code}, {"message", message}};
    if (ref) e["ref"] = *ref;
    reply(ws, e);
}

} // namespace

int main(int argc, char **argv)
{
    std::string host = "127.0.0.1";
    int port = 8080;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--host")) host = argv[i + 1];
        else if (!strcmp(argv[i], "--port")) port = atoi(argv[i + 1]);
        else {
            fprintf(stderr, "usage: uws-chat [--host H] [--port P]\n");
            return 2;
        }
    }

    uWS::App app;
    app.ws<PerSocketData>("/ws", {
        .compression = uWS::DISABLED,
        .maxPayloadLength = 1024 * 1024,
        .maxBackpressure = 4 * 1024 * 1024,
        .closeOnBackpressureLimit = false,
        .upgrade = [](auto *res, auto *req, auto *context) {
            std::string user(req->getQuery("user"));
            if (user.empty()) {
                res->writeStatus("401 Unauthorized")->end("{\"error\":\"unauthorized\"}");
                return;
            }
            res->template upgrade<PerSocketData>({std::move(user)}, req->getHeader("sec-websocket-key"),
                                                 req->getHeader("sec-websocket-protocol"),
                                                 req->getHeader("sec-websocket-extensions"), context);
        },
        .open = [](auto *ws) {
            reply(ws, json{{"type", "hello"}, {"user", ws->getUserData()->user},
                           {"session", std::to_string(next_session++)}, {"node", "uws"},
                           {"heartbeat_ms", 120000}, {"server_time", now_ms()}});
        },
        .message = [&app](auto *ws, std::string_view data, uWS::OpCode op) {
            json cmd = json::parse(data, nullptr, false);
            if (op != uWS::OpCode::TEXT || cmd.is_discarded() || !cmd.is_object()) {
                error(ws, nullptr, "bad_request", "frames must be JSON objects");
                return;
            }
            const json *ref = cmd.contains("ref") ? &cmd["ref"] : nullptr;
            json nullref; // "ref": null when the command had none
            const json &r = ref ? *ref : nullref;
            std::string type = cmd.value("type", "");
            std::string name = cmd.contains("room") && cmd["room"].is_string() ? cmd["room"].get<std::string>() : "";
            if (type == "create") {
                if (name.empty()) return error(ws, ref, "bad_request", "room is required");
                if (rooms.count(name)) return error(ws, ref, "conflict", "that room exists");
                std::string kind = cmd.value("kind", "public") == "private" ? "private" : "public";
                rooms[name] = Room{kind, 0};
                reply(ws, json{{"type", "created"}, {"room", name}, {"kind", kind}, {"ref", r}});
            } else if (type == "join") {
                auto it = rooms.find(name);
                if (it == rooms.end()) return error(ws, ref, "not_found", "no such room");
                ws->subscribe(name);
                reply(ws, json{{"type", "joined"}, {"room", name}, {"seq", it->second.seq},
                               {"kind", it->second.kind}, {"ref", r}});
            } else if (type == "leave") {
                ws->unsubscribe(name);
                reply(ws, json{{"type", "left"}, {"room", name}, {"ref", r}});
            } else if (type == "send") {
                auto it = rooms.find(name);
                if (it == rooms.end()) return error(ws, ref, "not_found", "no such room");
                if (!ws->isSubscribed(name)) return error(ws, ref, "not_member", "join the room first");
                if (!cmd.contains("text") || !cmd["text"].is_string())
                    return error(ws, ref, "bad_request", "text is required");
                uint64_t seq = ++it->second.seq;
                std::string id = std::to_string(next_id++);
                int64_t ts = now_ms();
                reply(ws, json{{"type", "ack"}, {"room", name}, {"id", id}, {"seq", seq}, {"ts", ts}, {"ref", r}});
                json msg = {{"type", "message"}, {"room", name}, {"id", id}, {"seq", seq},
                            {"from", ws->getUserData()->user}, {"text", cmd["text"]}, {"ts", ts}};
                app.publish(name, msg.dump(), uWS::OpCode::TEXT);
            } else if (type == "ping") {
                reply(ws, json{{"type", "pong"}, {"ref", r}});
            } else {
                error(ws, ref, "bad_request", "unknown type");
            }
        },
    }).listen(host, port, [&](auto *listen_socket) {
        if (listen_socket) {
            printf("listening %s:%d\n", host.c_str(), us_socket_local_port(0, (struct us_socket_t *)listen_socket));
            fflush(stdout);
        } else {
            fprintf(stderr, "uws-chat: cannot listen on %s:%d\n", host.c_str(), port);
            exit(1);
        }
    });
    app.run();
    return 0;
}
