# op: service.start
$DataB64 = '__FAILOVER_DATA__'
# --- prologue: identical in every template (tests/test_templates.py checks it) ---
$ErrorActionPreference = 'Stop'
$ProgressPreference = 'SilentlyContinue'
function Get-Win32Code($Exception) {
    # The Win32 error behind an exception chain (0 when there is none).
    for ($e = $Exception; $null -ne $e; $e = $e.InnerException) {
        if ($e -is [ComponentModel.Win32Exception]) {
            return $e.NativeErrorCode
        }
        if ($e -is [IO.IOException] -and ($e.HResult -band 0xFFFF0000) -eq 0x80070000) {
            return $e.HResult -band 0xFFFF
        }
    }
    return 0
}
function Get-ErrorChain($Exception) {
    # Every message of the chain: 'Cannot start service' alone hides the cause (1069, 1058, 1068).
    $messages = @()
    for ($e = $Exception; $null -ne $e; $e = $e.InnerException) {
        $text = [string]$e.Message
        $code = Get-Win32Code $e
        if ($code -ne 0 -and $null -eq $e.InnerException) {
            $text = "$text (Win32 error $code)"
        }
        if ($messages -notcontains $text) {
            $messages += $text
        }
    }
    return ($messages -join ' <- ')
}
function Write-Failure($Exception) {
    @{ ok = $false; error = (Get-ErrorChain $Exception) } | ConvertTo-Json -Compress
    exit 1
}
# --- end of prologue ---
# --- helpers: service lookup (identical wherever used) ---
function Get-OneService([string]$Name) {
    # Get-Service -Name treats * ? [ ] as wildcards: an exact name must match exactly one service.
    if ($Name -eq '' -or $Name -match '[\*\?\[\]]') {
        throw "invalid service name '$Name': wildcard characters are not allowed"
    }
    $found = @(Get-Service -Name $Name -ErrorAction SilentlyContinue)
    if ($found.Count -ne 1) {
        throw "expected exactly one service named '$Name', found $($found.Count)"
    }
    return $found[0]
}
# --- end of helpers: service lookup ---
# --- helpers: service control (identical wherever used) ---
function Wait-Status($Service, [string]$Status, [DateTime]$Deadline, [string]$Verb) {
    $left = $Deadline - [DateTime]::UtcNow
    if ($left -lt [TimeSpan]::Zero) {
        $left = [TimeSpan]::Zero
    }
    try {
        $Service.WaitForStatus($Status, $left)
    }
    catch [ServiceProcess.TimeoutException] {
        $Service.Refresh()
        throw "service '$($Service.ServiceName)' did not $Verb within $($Data.timeout_s) s: stuck in $([string]$Service.Status)"
    }
    $Service.Refresh()
}
function Stop-OneService($Service, [DateTime]$Deadline) {
    # A starting service refuses to stop (1061): let it finish starting first.
    if ('StartPending', 'ContinuePending' -contains [string]$Service.Status) {
        Wait-Status $Service 'Running' $Deadline 'start'
    }
    if ('Stopped', 'StopPending' -notcontains [string]$Service.Status) {
        $running = @($Service.DependentServices | Where-Object { $_.Status -ne 'Stopped' } | ForEach-Object { $_.ServiceName })
        if ($running.Count -gt 0) {
            throw "service '$($Service.ServiceName)' has running dependent services: $($running -join ', '); stop them first"
        }
        try {
            # Stop(), not Stop-Service -Force: dependents are refused above, never stopped silently.
            $Service.Stop()
        }
        catch {
            # 1062: it stopped meanwhile.
            if ((Get-Win32Code $_.Exception) -ne 1062) {
                throw
            }
        }
    }
    Wait-Status $Service 'Stopped' $Deadline 'stop'
}
function Start-OneService($Service, [DateTime]$Deadline) {
    if ('Paused', 'PausePending', 'ContinuePending' -contains [string]$Service.Status) {
        throw "service '$($Service.ServiceName)' is $([string]$Service.Status): resume or stop it first; the bot does not start a paused service"
    }
    # A stopping service refuses to start (1061): let it stop first.
    if ([string]$Service.Status -eq 'StopPending') {
        Wait-Status $Service 'Stopped' $Deadline 'stop'
    }
    if ([string]$Service.Status -eq 'Stopped') {
        if ([string]$Service.StartType -eq 'Disabled') {
            throw "service '$($Service.ServiceName)' is Disabled (its start type): set it to Automatic or Manual first"
        }
        try {
            $Service.Start()
        }
        catch {
            # 1056: it is already running (another start won the race).
            if ((Get-Win32Code $_.Exception) -ne 1056) {
                throw
            }
        }
    }
    Wait-Status $Service 'Running' $Deadline 'start'
}
# --- end of helpers: service control ---
try {
    $Data = [Text.Encoding]::UTF8.GetString([Convert]::FromBase64String($DataB64)) | ConvertFrom-Json
    $svc = Get-OneService ([string]$Data.service)
    # Already running is success; starting (StartPending) is waited for.
    $changed = [string]$svc.Status -ne 'Running'
    Start-OneService $svc ([DateTime]::UtcNow.AddSeconds([double]$Data.timeout_s))
    [ordered]@{
        ok      = $true
        service = $svc.ServiceName
        state   = [string]$svc.Status
        changed = $changed
    } | ConvertTo-Json -Compress
}
catch {
    Write-Failure $_.Exception
}
