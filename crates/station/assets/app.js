/* The station's TV page. Plain ES5 (old set-top-box browsers run it), no framework, no build.
 *
 * Data: /api/status, /api/lessons, /api/schedule (refreshed every 15 s); POST /api/attendance.
 * Live: the status's live channels; one on air has a "watch live" button that plays its
 * playlist (/live/CHANNEL/RENDITION.m3u8) in the same player; off air, the next live showing.
 * Remote: arrow keys move the focus (to the nearest item in that direction), Enter plays or
 * presses, Back / Escape closes the player or the form. A phone taps.
 * Player: the video element plays the HLS URL itself where the browser can (Safari, some
 * set-top boxes, recent Chromium); elsewhere hls.js (served by the station) feeds it through
 * Media Source Extensions. "?player=hlsjs" or "?player=native" in the page's URL forces one.
 */
(function () {
  "use strict";

  var state = { status: null, lessons: [], schedule: null, fetchedAt: 0 };
  var hls = null;
  var returnFocus = null;
  var attendanceFor = null;
  var params = {};
  location.search.replace(/^\?/, "").split("&").forEach(function (kv) {
    var p = kv.split("=");
    if (p[0]) params[decodeURIComponent(p[0])] = decodeURIComponent(p[1] || "");
  });

  function $(id) { return document.getElementById(id); }

  function el(tag, attrs, children) {
    var e = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) {
      if (k === "text") e.textContent = attrs[k];
      else if (k === "cls") e.className = attrs[k];
      else e.setAttribute(k, attrs[k]);
    });
    (children || []).forEach(function (c) { if (c) e.appendChild(c); });
    return e;
  }

  /* "<zh> <en>" as two spans, English secondary. */
  function bi(zh, en) {
    var s = el("span");
    s.appendChild(el("span", { cls: "zh", text: zh }));
    s.appendChild(document.createTextNode(" "));
    s.appendChild(el("span", { cls: "en", text: en }));
    return s;
  }

  function request(method, url, body, done) {
    var x = new XMLHttpRequest();
    x.open(method, url);
    x.timeout = 10000;
    if (body !== null) x.setRequestHeader("Content-Type", "application/json");
    x.onload = function () {
      var v = null;
      try { v = JSON.parse(x.responseText); } catch (e) { v = { error: x.responseText }; }
      done(x.status, v);
    };
    x.onerror = x.ontimeout = function () { done(0, { error: "无法连接学习站 / cannot reach the station" }); };
    x.send(body === null ? null : JSON.stringify(body));
  }

  function mb(bytes) { return (bytes / 1e6).toFixed(bytes < 1e8 ? 1 : 0) + " MB"; }
  function gb(bytes) { return bytes < 1e9 ? mb(bytes) : (bytes / 1e9).toFixed(1) + " GB"; }
  function duration(secs) { return secs >= 60 ? Math.round(secs / 60) + " 分钟" : secs + " 秒"; }
  function pad(n) { return (n < 10 ? "0" : "") + n; }

  /* Station time (its clock, its offset): a TV's own clock is often wrong. */
  function stationNow() {
    if (!state.status) return null;
    return state.status.now + Math.floor((Date.now() - state.fetchedAt) / 1000);
  }
  function localParts(unix) {
    var d = new Date((unix + state.status.utc_offset_seconds) * 1000);
    return { date: d.getUTCFullYear() + "-" + pad(d.getUTCMonth() + 1) + "-" + pad(d.getUTCDate()),
             time: pad(d.getUTCHours()) + ":" + pad(d.getUTCMinutes()) };
  }

  function renderClock() {
    var now = stationNow();
    if (now === null) return;
    var p = localParts(now);
    $("clock-time").textContent = p.time;
    $("clock-date").textContent = p.date;
  }

  function lessonById(id) {
    for (var i = 0; i < state.lessons.length; i++) if (state.lessons[i].id === id) return state.lessons[i];
    return null;
  }

  var STATES = {
    ready: ["可以播放", "ready"],
    downloading: ["下载中", "downloading"],
    at_risk: ["可能来不及", "at risk"],
    unknown: ["未收到", "not received"],
    on_air: ["正在直播", "on air"],
    upcoming: ["直播预告", "live"],
    not_followed: ["本站未接收此直播", "not received here"]
  };

  function liveChannel(name) {
    var chs = state.status && state.status.live ? state.status.live.channels : [];
    for (var i = 0; i < chs.length; i++) if (chs[i].channel === name) return chs[i];
    return null;
  }

  function playLive(c, title, from) {
    play({ id: c.channel, title: "直播 / live: " + (title || c.channel), hls: c.playlist, attachments: [] }, from);
  }

  /* A live showing's times: "19:00–20:00", with the date when it is not today. */
  function showingWhen(sh) {
    var today = state.status ? state.status.today : "";
    return (sh.local_date !== today ? sh.local_date + " " : "") + sh.local_time + "–" + sh.end_local_time;
  }

  function renderLive() {
    var box = $("live");
    var chs = state.status && state.status.live ? state.status.live.channels : [];
    box.innerHTML = "";
    if (!chs.length) {
      box.appendChild(bi("暂无直播", "No live broadcast"));
      return;
    }
    chs.forEach(function (c) {
      var div = el("div", { cls: "channel" });
      var sh = c.showing;
      var title = sh && sh.now ? sh.title : c.channel;
      if (c.on_air && c.playlist) {
        div.appendChild(el("div", { cls: "on-air" }, [bi("● 正在直播", "on air")]));
        div.appendChild(el("div", { cls: "live-title", text: title }));
        var b = el("button", { cls: "btn watch", "data-nav": "", "data-key": "live-" + c.channel, "data-live": c.channel },
          [bi("收看直播", "Watch live")]);
        b.onclick = function () { playLive(c, title, b); };
        div.appendChild(b);
      } else {
        div.appendChild(el("div", { cls: "off-air" }, [bi("现在没有直播（" + c.channel + "）", "off air (" + c.channel + ")")]));
        if (sh) {
          div.appendChild(el("div", { cls: "next" }, [bi("下次直播：" + showingWhen(sh) + " " + sh.title, "next live: " + showingWhen(sh))]));
        } else {
          div.appendChild(el("div", { cls: "sub" }, [bi("暂无直播安排", "no live showing scheduled")]));
        }
      }
      box.appendChild(div);
    });
  }

  function renderSchedule() {
    var ul = $("schedule");
    ul.innerHTML = "";
    var today = (state.schedule && state.schedule.showings || []).filter(function (s) { return s.today; });
    if (!today.length) {
      ul.appendChild(el("li", { cls: "empty" }, [bi("今天没有安排播放", "No showings today")]));
      return;
    }
    today.forEach(function (s) {
      if (s.kind === "live") { ul.appendChild(liveShowingItem(s)); return; }
      var st = STATES[s.state] || STATES.unknown;
      var item = el("button", { cls: "item", "data-nav": "", "data-key": "show-" + s.lesson + "-" + s.show_at }, [
        el("span", { cls: "time", text: s.local_time }),
        el("span", { cls: "title", text: s.title || s.lesson }),
        el("span", { cls: "state " + s.state }, [bi(st[0], st[1])])
      ]);
      item.onclick = function () {
        var l = lessonById(s.lesson);
        if (l && l.ready) play(l, item);
        else flash(item, s.state === "at_risk" ? "这节课可能无法按时下载完 / may not arrive in time" : "还没有下载完 / not downloaded yet");
      };
      var li = el("li", {}, [item]);
      if (s.attendance) {
        li.appendChild(el("div", { cls: "sub", text: "已登记 " + s.attendance.present + " 人 / " + s.attendance.present + " present" }));
      } else if (s.attendance_open) {
        var b = el("button", { cls: "btn small", "data-nav": "", "data-key": "att-" + s.lesson + "-" + s.show_at }, [bi("登记到课人数", "Attendance")]);
        b.onclick = function () { openAttendance(s, b); };
        li.appendChild(b);
      }
      ul.appendChild(li);
    });
  }

  /* A live showing in today's schedule: when to tune in; Enter watches it once on air. */
  function liveShowingItem(s) {
    var st = STATES[s.state] || STATES.upcoming;
    var item = el("button", { cls: "item", "data-nav": "", "data-key": "show-live-" + s.channel + "-" + s.show_at }, [
      el("span", { cls: "time", text: s.local_time }),
      el("span", { cls: "title", text: "直播 " + s.title + " (" + s.local_time + "–" + s.end_local_time + ")" }),
      el("span", { cls: "state " + s.state }, [bi(st[0], st[1])])
    ]);
    item.onclick = function () {
      var c = liveChannel(s.channel);
      if (c && c.on_air && c.playlist) playLive(c, s.title, item);
      else if (s.state === "not_followed") flash(item, "本站没有接收这个直播频道 / this station does not receive this channel");
      else flash(item, "直播 " + s.local_time + " 开始，请到时收看 / tune in at " + s.local_time);
    };
    return el("li", {}, [item]);
  }

  function renderLessons() {
    var ul = $("lessons");
    ul.innerHTML = "";
    var ready = state.lessons.filter(function (l) { return l.ready; });
    if (!ready.length) ul.appendChild(el("li", { cls: "empty" }, [bi("还没有可以播放的课程", "Nothing ready yet")]));
    ready.forEach(function (l) {
      var b = el("button", { cls: "btn lesson", "data-nav": "", "data-key": "lesson-" + l.id, "data-lesson": l.id }, [
        el("span", { cls: "title", text: l.title || l.id }),
        el("span", { cls: "meta", text: (l.category === "required" ? "必修" : "选修") + " · " + duration(l.duration_seconds) + " · " + l.publisher })
      ]);
      b.onclick = function () { play(l, b); };
      ul.appendChild(el("li", {}, [b]));
    });
    var fetching = state.lessons.filter(function (l) { return !l.ready; });
    $("fetching").textContent = fetching.length
      ? "下载中 " + fetching.length + " 节 / downloading " + fetching.length + ": " +
        fetching.map(function (l) { return (l.title || l.id) + " " + Math.floor(100 * l.held_bytes / Math.max(1, l.size_bytes)) + "%"; }).join(", ")
      : "";
  }

  function renderStatus() {
    var s = state.status;
    if (!s) return;
    var place = [s.place.district, s.place.town].filter(Boolean).join(" · ");
    $("station-name").textContent = s.station + (place ? " · " + place : "");
    var y = s.sync;
    var sync = $("sync");
    sync.innerHTML = "";
    var line = y.catalog_version === 0
      ? bi("尚未收到课程目录", "no catalog yet")
      : bi((y.synced ? "已同步" : "同步中") + "：" + y.lessons_ready + "/" + y.lessons_wanted + " 节课就绪",
           (y.synced ? "synced" : "syncing") + ": " + y.lessons_ready + "/" + y.lessons_wanted + " lessons ready, " + mb(y.bytes_ready) + " of " + mb(y.bytes_wanted));
    line.className = y.synced ? "ok" : "warn";
    sync.appendChild(line);
    if (y.lessons_at_risk > 0) {
      var r = bi(y.lessons_at_risk + " 节课可能来不及", y.lessons_at_risk + " at risk");
      r.className = "bad";
      sync.appendChild(el("div", {}, [r]));
    }
    if (y.last_synced_at) sync.appendChild(el("div", { cls: "sub", text: "上次同步 / last synced " + localParts(y.last_synced_at).date + " " + localParts(y.last_synced_at).time }));
    if (!y.downloads_allowed) sync.appendChild(el("div", { cls: "sub" }, [bi("现在不是下载时段", "outside the download window")]));
    var d = s.disk;
    $("disk").innerHTML = "";
    var disk = bi("磁盘：已用 " + gb(d.used_bytes) + " / " + gb(d.budget_bytes), "disk: " + gb(d.used_bytes) + " of " + gb(d.budget_bytes) + " used");
    if (y.disk_full) { disk = bi("磁盘已满，下载已暂停", "disk full: downloads stopped"); disk.className = "bad"; }
    $("disk").appendChild(disk);
    $("disk-bar").style.width = Math.min(100, 100 * d.used_bytes / Math.max(1, d.budget_bytes)) + "%";
  }

  function render() {
    var keep = document.activeElement && document.activeElement.getAttribute("data-key");
    renderStatus();
    renderLive();
    renderSchedule();
    renderLessons();
    renderClock();
    if (keep && $("player").hidden && $("attendance").hidden) {
      var again = document.querySelector('[data-key="' + keep + '"]');
      if (again) again.focus();
    }
    if (!$("player").hidden || !$("attendance").hidden) return;
    if (!document.activeElement || document.activeElement === document.body) {
      var first = navigable()[0];
      if (first) first.focus();
    }
  }

  function refresh() {
    var left = 3;
    function one() { if (--left === 0) render(); }
    request("GET", "/api/status", null, function (code, v) { if (code === 200) { state.status = v; state.fetchedAt = Date.now(); } one(); });
    request("GET", "/api/lessons", null, function (code, v) { if (code === 200) state.lessons = v.lessons; one(); });
    request("GET", "/api/schedule", null, function (code, v) { if (code === 200) state.schedule = v; one(); });
  }

  function flash(item, text) {
    var note = el("div", { cls: "sub warn", text: text });
    item.parentNode.appendChild(note);
    setTimeout(function () { if (note.parentNode) note.parentNode.removeChild(note); }, 4000);
  }

  /* ---- player ---- */

  function play(lesson, from) {
    returnFocus = from;
    var video = $("video");
    var msg = $("player-msg");
    msg.textContent = "";
    $("player-title").textContent = lesson.title || lesson.id;
    var files = $("player-files");
    files.innerHTML = "";
    (lesson.attachments || []).forEach(function (a) {
      if (a.url) files.appendChild(el("li", {}, [el("a", { href: a.url, download: a.name, "data-nav": "", text: "下载 / download: " + a.name + " (" + mb(a.size_bytes) + ")" })]));
    });
    $("player").hidden = false;
    var native = video.canPlayType("application/vnd.apple.mpegurl");
    var mse = !!(window.Hls && window.Hls.isSupported());
    var useNative = params.player === "native" || (params.player !== "hlsjs" && native !== "") || !mse;
    if (useNative && native === "" && !mse) {
      msg.textContent = "这个浏览器不能播放 HLS 视频 / this browser cannot play HLS";
    } else if (useNative) {
      video.setAttribute("data-player", "native");
      video.src = lesson.hls;
    } else {
      video.setAttribute("data-player", "hls.js");
      hls = new window.Hls({ enableWorker: true });
      hls.on(window.Hls.Events.ERROR, function (_e, data) {
        if (data.fatal) msg.textContent = "播放出错 / playback error: " + data.type + " " + data.details;
      });
      hls.loadSource(lesson.hls);
      hls.attachMedia(video);
    }
    video.onerror = function () {
      var e = video.error;
      msg.textContent = "播放出错 / playback error" + (e ? ": " + e.code + " " + (e.message || "") : "");
    };
    var p = video.play();
    if (p && p.catch) p.catch(function (e) { msg.textContent = "按确认键开始播放 / press Enter to play (" + e.name + ")"; });
    $("back").focus();
  }

  function closePlayer() {
    var video = $("video");
    video.pause();
    if (hls) { hls.destroy(); hls = null; }
    video.removeAttribute("src");
    video.removeAttribute("data-player");
    video.load();
    $("player").hidden = true;
    if (returnFocus && document.body.contains(returnFocus)) returnFocus.focus();
    else { var f = navigable()[0]; if (f) f.focus(); }
  }

  /* ---- attendance ---- */

  function openAttendance(showing, from) {
    attendanceFor = showing;
    returnFocus = from;
    $("attendance-what").textContent = showing.local_date + " " + showing.local_time + " · " + (showing.title || showing.lesson);
    $("present").value = "";
    $("names").value = "";
    $("pin").value = "";
    $("pin-row").hidden = !(state.status && state.status.attendance_pin);
    $("attendance-msg").textContent = "";
    $("attendance").hidden = false;
    $("present").focus();
  }

  function closeAttendance() {
    $("attendance").hidden = true;
    attendanceFor = null;
    if (returnFocus && document.body.contains(returnFocus)) returnFocus.focus();
  }

  function submitAttendance(ev) {
    ev.preventDefault();
    var s = attendanceFor;
    if (!s) return;
    var raw = $("present").value.trim();
    var msg = $("attendance-msg");
    if (!/^[0-9]+$/.test(raw)) { msg.textContent = "请输入到课人数（数字） / enter the number of people"; $("present").focus(); return; }
    var names = $("names").value.split(/\r?\n/).map(function (n) { return n.trim(); }).filter(Boolean);
    var form = { lesson: s.lesson, show_at: s.show_at, present: parseInt(raw, 10), names: names };
    if (!$("pin-row").hidden) form.pin = $("pin").value.trim();
    request("POST", "/api/attendance", form, function (code, v) {
      if (code === 201) {
        closeAttendance();
        refresh();
      } else {
        msg.textContent = (v && v.error) || ("错误 / error " + code);
      }
    });
  }

  /* ---- remote control ---- */

  function visible(e) { return !!(e.offsetWidth || e.offsetHeight || e.getClientRects().length); }

  function scope() {
    if (!$("attendance").hidden) return $("attendance");
    if (!$("player").hidden) return $("player");
    return $("home");
  }

  function navigable() {
    var all = scope().querySelectorAll("[data-nav]");
    var out = [];
    for (var i = 0; i < all.length; i++) if (visible(all[i])) out.push(all[i]);
    return out;
  }

  /* The nearest item in the arrow's direction; else the next or previous one in page order. */
  function move(key) {
    var items = navigable();
    if (!items.length) return;
    var cur = document.activeElement;
    var at = items.indexOf(cur);
    if (at < 0) { items[0].focus(); return; }
    var a = cur.getBoundingClientRect();
    var ax = a.left + a.width / 2, ay = a.top + a.height / 2;
    var best = null, bestScore = Infinity;
    items.forEach(function (it) {
      if (it === cur) return;
      var b = it.getBoundingClientRect();
      var bx = b.left + b.width / 2, by = b.top + b.height / 2;
      var dx = bx - ax, dy = by - ay, main, cross;
      if (key === "ArrowDown") { if (b.top < a.bottom - 2) return; main = dy; cross = dx; }
      else if (key === "ArrowUp") { if (b.bottom > a.top + 2) return; main = -dy; cross = dx; }
      else if (key === "ArrowRight") { if (b.left < a.right - 2) return; main = dx; cross = dy; }
      else { if (b.right > a.left + 2) return; main = -dx; cross = dy; }
      var score = main + 2 * Math.abs(cross);
      if (score < bestScore) { bestScore = score; best = it; }
    });
    if (!best) {
      var forward = key === "ArrowDown" || key === "ArrowRight";
      best = items[forward ? Math.min(items.length - 1, at + 1) : Math.max(0, at - 1)];
    }
    best.focus();
    if (best.scrollIntoView) best.scrollIntoView({ block: "nearest" });
  }

  var BACK_KEYS = { Escape: 1, GoBack: 1, BrowserBack: 1, Back: 1 };
  var BACK_CODES = { 461: 1, 10009: 1, 27: 1 };

  document.addEventListener("keydown", function (e) {
    var key = e.key || "";
    var code = e.keyCode || 0;
    var t = e.target;
    var typing = t && (t.tagName === "INPUT" || t.tagName === "TEXTAREA");
    if (BACK_KEYS[key] || BACK_CODES[code] || (key === "Backspace" && !typing)) {
      if (!$("attendance").hidden) { closeAttendance(); e.preventDefault(); }
      else if (!$("player").hidden) { closePlayer(); e.preventDefault(); }
      return;
    }
    if (key === "ArrowUp" || key === "ArrowDown" || key === "ArrowLeft" || key === "ArrowRight" ||
        (code >= 37 && code <= 40 && !key)) {
      if (!key) key = ["ArrowLeft", "ArrowUp", "ArrowRight", "ArrowDown"][code - 37];
      if (typing && (key === "ArrowLeft" || key === "ArrowRight")) return;
      if (t && t.tagName === "TEXTAREA") return;
      if (t && t.tagName === "VIDEO") return;
      move(key);
      e.preventDefault();
    }
  });

  $("back").onclick = closePlayer;
  $("attendance-cancel").onclick = closeAttendance;
  $("attendance-form").onsubmit = submitAttendance;
  setInterval(renderClock, 10000);
  setInterval(function () { if ($("player").hidden && $("attendance").hidden) refresh(); }, 15000);
  refresh();
})();
